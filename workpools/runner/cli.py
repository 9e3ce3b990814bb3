"""`evalq runner`: a warm runner for one node, until Ctrl-C, SIGTERM or idle."""

from __future__ import annotations

import asyncio
import signal
from typing import List, Optional

import typer

from flows.naming import LOCAL_WORK_POOL
from flows.runtime.discovery import API_HELP
from flows.runtime.liveness import RUNNER_POLL_SECONDS
from generate.errors import exit_on_input_error


@exit_on_input_error
def runner(
    pool: str = typer.Option(LOCAL_WORK_POOL, "--pool", help="Work pool whose flow runs to run (type evalq-runner)"),
    work_queue: List[str] = typer.Option([], "--work-queue", help="Only these queues of the pool (repeatable)"),
    slots: int = typer.Option(8, "--slots", min=1, help="Flow runs at once"),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", min=0, help="Exit after this many seconds without work"),
    name: Optional[str] = typer.Option(None, "--name", help="Runner name shown in Prefect (default: host and pid)"),
    poll_seconds: float = typer.Option(RUNNER_POLL_SECONDS, "--poll-seconds", min=0.1,
                                      help="Safety poll; scheduled runs wake the runner at once (5 s at most while their events do not come)"),
    wait: float = typer.Option(0.0, "--wait", min=0, help="Wait up to this many seconds for the API and the pool (a runner started beside its server)"),
    preload: List[str] = typer.Option([], "--preload", help="Import this flow entrypoint (module:flow) while waiting (repeatable)"),
    max_memory: Optional[float] = typer.Option(None, "--max-memory", min=0.01, metavar="GB",
                                               help="Claim no run while this process and its children use more (GiB); again below 90%"),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Run the flow runs of a work pool inside this process, several at once (a warm runner)."""
    from flows.runtime.discovery import check_server, pointed_at, require_prefect

    found = require_prefect(api, check=False)  # checked below, after waiting for it with --wait
    with pointed_at(found.api_url):
        for entrypoint in preload:
            preload_flow(entrypoint)
        if wait:
            wait_for_pool(found.api_url, pool, wait)
        check_server(found)
        found.announce()
        max_memory_mb = None if max_memory is None else max_memory * 1024
        warn_above_cgroup(max_memory_mb)
        code = serve(pool, work_queue, slots, idle_timeout, name, poll_seconds, max_memory_mb)
    raise typer.Exit(code)


def preload_flow(entrypoint: str) -> None:
    """Import a flow before the first run needs it (a warm runner's first episodes start sooner)."""
    from workpools.runner.engine import load_flow

    try:
        load_flow(entrypoint)
    except Exception as exc:  # the run that needs it reports it properly
        typer.echo(f"--preload {entrypoint}: {exc.__class__.__name__}: {exc}", err=True)


def wait_for_pool(api_url: str, pool: str, seconds: float) -> None:
    """Return once the API answers and `pool` exists, or after `seconds` (check_api then says why)."""
    from flows.runtime.api import wait_until_answers

    wait_until_answers(f"{api_url.rstrip('/')}/work_pools/{pool}", seconds, interval=0.2)


def warn_above_cgroup(max_memory_mb: float | None) -> None:
    """A `--max-memory` above what this job may use (its cgroup's limit) would never stop a claim."""
    from flows.runtime.memory import cgroup_limit_mb

    limit = cgroup_limit_mb()
    if max_memory_mb is not None and limit is not None and max_memory_mb > limit:
        typer.echo(f"warning: --max-memory {max_memory_mb / 1024:g} GB is above this job's memory limit "
                   f"({limit / 1024:.1f} GB, cgroup): the OOM killer comes first", err=True)


def serve(pool: str, work_queues: list[str], slots: int, idle_timeout: float | None, name: str | None,
          poll_seconds: float = RUNNER_POLL_SECONDS, max_memory_mb: float | None = None) -> int:
    """Run a `RunnerWorker` in this thread's event loop; the first SIGINT/SIGTERM stops it.

    Runs still going at that moment are crashed (their slots released) and the campaign
    requeues them, so a stop takes seconds, not an episode's length.
    """
    from workpools.runner.worker import RunnerWorker

    async def main() -> None:
        worker = RunnerWorker(
            work_pool_name=pool, work_queues=work_queues or None, limit=slots, name=name,
            idle_timeout=idle_timeout, poll_seconds=poll_seconds, max_memory_mb=max_memory_mb,
        )
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await worker.start(printer=lambda line: typer.echo(line, err=True))
        except asyncio.CancelledError:
            typer.echo(f"Runner {worker.name!r} stopped by signal", err=True)

    asyncio.run(main())
    return 0
