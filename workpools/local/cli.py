"""`evalq queue ...`: task-spooler's verbs for the local GPU queue (`evalq submit` fills it)."""

from __future__ import annotations

import asyncio
import codecs
import shlex
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from flows.naming import LOCAL_WORK_POOL
from flows.runtime.discovery import API_HELP
from generate.errors import InputError, exit_on_input_error
from workpools.cli import with_prefect_api
from workpools.local.entries import QueueEntry, Status
from workpools.local.submit import DEFAULT_HOME, queue_home

queue_app = typer.Typer(
    no_args_is_help=False,
    help="The local GPU queue (task-spooler style): list, output, info, kill, remove, clear, slots, "
         "gpu-free-threshold, worker, shutdown (-K).",
)

FOLLOW_SECONDS = 0.5
SHUTDOWN_WAIT_SECONDS = 60.0
API = typer.Option(None, "--api", help=API_HELP)


async def _with_client(action):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await action(client)


def in_prefect(action, api: str | None = None, announce: bool = True, start: bool = False):
    """`action(client)` on the Prefect server the rule finds (none or a dead one: one line);
    with `start`, as task-spooler starts its server on first use, the user's `evalq server` is
    started when there is none (`evalq queue shutdown` stops it)."""
    if not start:
        return with_prefect_api(_with_client(action), api, announce)
    from workpools.cli import prefect_for, run_on
    from workpools.local.service import remember_started_server

    found = prefect_for(api, start=True)
    remember_started_server(queue_home(), found)
    return run_on(found, _with_client(action))


@queue_app.callback(invoke_without_command=True)
@exit_on_input_error
def queue(
    ctx: typer.Context,
    kill_server: bool = typer.Option(False, "-K", help="Shut the queue down (task-spooler's -K): `evalq queue shutdown`."),
    api: Optional[str] = API,
) -> None:
    """The queue: id, label, state, GPUs, command and times of every job."""
    if ctx.invoked_subcommand is not None:
        return
    if kill_server:
        shutdown(api=api, home=queue_home(), wait=SHUTDOWN_WAIT_SECONDS)
        return
    from workpools.local.entries import read_entries

    print_queue(in_prefect(read_entries, api))


@queue_app.command("output")
@exit_on_input_error
def output(
    queue_id: int = typer.Argument(..., metavar="ID"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
    api: Optional[str] = API,
) -> None:
    """The job's stdout (to stdout) and stderr (to stderr) so far."""
    # No line says which server: stderr carries the job's own stderr.
    entry = in_prefect(lambda client: print_output(client, queue_id, follow), api, announce=False)
    if entry is not None and entry.status.is_waiting:
        print(f"job {queue_id} has not started yet ({entry.status.value})", file=sys.stderr)


async def print_output(client, queue_id: int, follow: bool) -> QueueEntry | None:
    """Copy the job's output files to ours; with `follow`, until the job ends (or is deleted)."""
    from workpools.local.manage import get_entry, wait_until_final
    from workpools.local.output import Tail

    entry = await get_entry(client, queue_id)
    if not entry.job or not entry.job.stdout_path or not entry.job.stderr_path:
        raise InputError(None, f"job {queue_id} keeps no output files (queued by an older evalq): see its flow run's logs")
    streams = [(Tail(entry.job.stdout_path), sys.stdout), (Tail(entry.job.stderr_path), sys.stderr)]
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in streams]
    while True:
        done = entry is None or entry.status.is_final or not follow
        for (tail, sink), decoder in zip(streams, decoders):
            text = decoder.decode(tail.read(), final=done)
            if text:
                sink.write(text)
                sink.flush()
        if done:
            return entry
        await asyncio.sleep(FOLLOW_SECONDS)
        entry = await wait_until_final(client, entry, 0)


@queue_app.command("info")
@exit_on_input_error
def info(queue_id: int = typer.Argument(..., metavar="ID"), api: Optional[str] = API) -> None:
    """Everything about one job (never the values of its environment)."""
    from workpools.local.environment import count_variables
    from workpools.local.manage import get_entry

    entry = in_prefect(lambda client: get_entry(client, queue_id), api)
    job = entry.job
    rows = [
        ("id", entry.display_id),
        ("name", entry.name),
        ("state", f"{entry.status.value} ({entry.state_name}{': ' + entry.message if entry.message else ''})"),
        ("flow run", str(entry.run_id)),
        ("host", entry.host or "-"),
    ]
    if job:
        variables = count_variables(job.env_file)
        rows += [
            ("GPUs", f"{gpus_requested(entry)} requested" + (f", holding [{held(entry)}]" if entry.held_gpus is not None else "")),
            ("command", shlex.join(job.argv)),
            ("cwd", job.cwd or "-"),
            ("timeout", "-" if job.timeout is None else f"{job.timeout:g} s"),
            ("depends on", ", ".join(map(str, job.depends_on)) or "-"),
            ("stdout", job.stdout_path or "-"),
            ("stderr", job.stderr_path or "-"),
            ("environment", "the worker's" if not job.env_file else
             f"{variables} variables captured at submit (values not shown)" if variables is not None else f"{job.env_file} missing"),
        ]
    rows += [
        ("submitted", when(entry.submitted)),
        ("started", when(entry.command_started)),
        ("ended", when(entry.ended)),
        ("run time", run_time(entry)),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


@queue_app.command("kill")
@exit_on_input_error
def kill(
    queue_id: int = typer.Argument(..., metavar="ID"),
    wait: float = typer.Option(60.0, "--wait", min=0, help="Seconds to wait for the job to end (0: do not wait)."),
    api: Optional[str] = API,
) -> None:
    """Stop a job: its command's process group is killed and its GPUs freed; the run ends Cancelled."""
    from workpools.local.manage import kill as kill_job

    entry = in_prefect(lambda client: kill_job(client, queue_id, wait), api)
    if entry is None:
        print(f"job {queue_id}: its flow run was deleted meanwhile")
    elif entry.status.is_final:
        print(f"job {queue_id} {entry.status.value}")
    else:
        print(f"job {queue_id} is {entry.status.value}: the cancel is in; it ends once its worker runs it", file=sys.stderr)
        raise typer.Exit(0 if wait == 0 else 1)


@queue_app.command("remove")
@exit_on_input_error
def remove(
    queue_id: int = typer.Argument(..., metavar="ID"),
    wait: float = typer.Option(30.0, "--wait", min=0, help="Seconds to wait for a waiting job to acknowledge."),
    api: Optional[str] = API,
) -> None:
    """Take a job that has not started out of the queue (it never will); a finished one is forgotten."""
    from workpools.local.manage import remove as remove_job

    entry = in_prefect(lambda client: remove_job(client, queue_id, wait), api)
    print(f"removed job {queue_id} ({entry.name})")


@queue_app.command("clear")
@exit_on_input_error
def clear(api: Optional[str] = API) -> None:
    """Forget every job that ended (their output files stay)."""
    from workpools.local.manage import clear as clear_jobs

    cleared = in_prefect(clear_jobs, api)
    print(f"cleared {len(cleared)} finished job{'s' if len(cleared) != 1 else ''}")


@queue_app.command("slots")
@exit_on_input_error
def slots(count: Optional[str] = typer.Argument(None, metavar="[N|unlimited]"), api: Optional[str] = API) -> None:
    """How many jobs run at once on this machine; with N, set it (running jobs keep theirs)."""
    from workpools.local.slots import parse_slots, read_slots, set_slots

    host_setting(count, parse_slots, read_slots, set_slots, lambda slots: slots.describe(), api)


@queue_app.command("gpu-free-threshold")
@exit_on_input_error
def gpu_free_threshold(value: Optional[str] = typer.Argument(None, metavar="[FRACTION|PERCENT]"), api: Optional[str] = API) -> None:
    """This machine's default: a GPU counts as free while this much of its memory is unused (0.8,
    or 80 as `tsp --set_gpu_free_perc 80`); queued jobs without their own use it from now on."""
    from workpools.local.options import parse_threshold
    from workpools.local.threshold import read_threshold, set_threshold

    host_setting(value, parse_threshold, read_threshold, set_threshold,
                 lambda threshold: f"GPUs count as free with {threshold:.0%} of their memory unused", api)


def host_setting(value: str | None, parse, read, write, describe, api: str | None) -> None:
    """Show this machine's setting (`read`), or set it to `parse(value)` (`write`: starting the
    user's server if there is none, as any `tsp` command starts its server)."""
    host = socket.gethostname()
    if value is None:
        print(f"{host}: {describe(in_prefect(lambda client: read(client, host), api))}")
        return
    try:
        wanted = parse(value)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    print(f"{host}: {describe(in_prefect(lambda client: write(client, host, wanted), api, start=True))}")


@queue_app.command("worker")
@exit_on_input_error
def worker(
    slots: int = typer.Option(32, "--slots", min=1, help="Jobs run at once (each job is a process group)."),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", min=1, help="Stop once no job has been queued or running this long (default: never)."),
    pool: str = typer.Option(LOCAL_WORK_POOL, "--pool", help="The queue's work pool."),
    home: Path = typer.Option(DEFAULT_HOME, "--home", envvar="EVALQ_QUEUE_HOME", help="Its record and logs (worker.json, runner.log)."),
    api: Optional[str] = API,
) -> None:
    """Run the queue's runner in the foreground and restart it when it dies (until Ctrl-C), on the
    Prefect server the rule finds, else your `evalq server`, started now."""
    from workpools.cli import prefect_for
    from workpools.local.keeper import keep_queue_runner
    from workpools.local.service import remember_started_server

    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    found = prefect_for(api, start=True)
    remember_started_server(home, found)
    raise typer.Exit(keep_queue_runner(found.api_url, slots, home, pool=pool, idle_timeout=idle_timeout))


@queue_app.command("shutdown")
@exit_on_input_error
def shutdown(
    api: Optional[str] = API,
    home: Path = typer.Option(DEFAULT_HOME, "--home", envvar="EVALQ_QUEUE_HOME", help="The queue's home (its worker's record)."),
    wait: float = typer.Option(60.0, "--wait", min=0, help="Seconds to wait for cancelled jobs to end."),
) -> None:
    """Cancel every job not ended, stop the queue's worker, and the Prefect server if a queue
    command started it (task-spooler's -K)."""
    from flows.runtime.api import api_answers
    from flows.runtime.discovery import find_prefect
    from workpools.local.shutdown import (
        Shutdown,
        cancel_unfinished,
        stop_started_server,
        stop_worker,
    )

    home = home.expanduser().resolve()
    report = Shutdown()
    found = find_prefect(api, home=None)
    if found is not None and not api_answers(found.api_url):
        print(f"the Prefect server at {found.api_url} does not answer: no job cancelled", file=sys.stderr)
        found = None
    if found is not None:
        report.cancelled, report.still_ending = in_prefect(lambda client: cancel_unfinished(client, wait), api)
    report.worker = stop_worker(home)
    report.stopped_server = stop_started_server(home)
    if found is not None and report.stopped_server is None:
        report.server_left_up = found.api_url
    for line in report.lines():
        print(line)


# --- rendering ---------------------------------------------------------------------------------


def gpus_requested(entry: QueueEntry) -> str:
    if entry.job is None:
        return "?"
    if entry.job.gpu_indices:
        return f"[{','.join(map(str, entry.job.gpu_indices))}]"
    return str(entry.job.gpus)


def held(entry: QueueEntry) -> str:
    return ",".join(map(str, entry.held_gpus or []))


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    local = moment.astimezone()
    return local.strftime("%H:%M:%S") if local.date() == datetime.now().date() else local.strftime("%Y-%m-%d %H:%M")


def run_time(entry: QueueEntry) -> str:
    if entry.command_started is None:
        return "-"
    end = entry.ended if entry.status.is_final and entry.ended else datetime.now(timezone.utc)
    seconds = max(0.0, (end - entry.command_started).total_seconds())
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


STATUS_STYLE = {
    Status.RUNNING: "green", Status.FINISHED: "dim", Status.FAILED: "red", Status.CRASHED: "red",
    Status.CANCELLED: "yellow", Status.CANCELLING: "yellow",
}


def print_queue(entries: list[QueueEntry]) -> None:
    """The rich table `evalq queue` prints."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("ID", "label", "state", "GPUs", "command", "submitted", "started", "time", title="evalq queue")
    for entry in entries:
        gpus = f"[{held(entry)}]" if entry.held_gpus is not None else gpus_requested(entry)
        command = shlex.join(entry.job.argv) if entry.job else "?"
        cells = (entry.display_id, entry.name, entry.status.value, gpus, command,
                 when(entry.submitted), when(entry.command_started), run_time(entry))
        table.add_row(*(Text(cell) for cell in cells), style=STATUS_STYLE.get(entry.status))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if not entries:
        print("the queue is empty")
