"""`evalq workpools ...` and `evalq submit` (registered through pyproject's `evalq.commands`)."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from flows.runtime.discovery import API_HELP
from generate.errors import InputError, exit_on_input_error
from workpools.local.options import DEFAULT_TIMEOUT
from workpools.local.seeds import FIRST_SEED
from workpools.local.submit import DEFAULT_HOME
from workpools.slurm.pilot_cli import slurm_runners

app = typer.Typer(no_args_is_help=True, help="Create or update the SLURM, Kubernetes and local work pools.")


@app.callback()
def workpools() -> None:
    """Create or update the SLURM, Kubernetes and local work pools."""


app.command("slurm-runners")(slurm_runners)


def prefect_for(api: str | None = None, start: bool = False):
    """The Prefect server the rule finds (`flows/runtime/discovery.py`), checked to answer; with
    `start`, the user's `evalq server` is started when there is none (as task-spooler starts
    its own); one line (on stderr) says which."""
    from flows.runtime.discovery import find_or_start_user_server, require_prefect

    found = find_or_start_user_server(api) if start else require_prefect(api)
    found.announce()
    return found


def run_on(found, coroutine):
    """Run `coroutine` pointed at `found`'s server; a server gone meanwhile is one line."""
    import httpx

    from flows.runtime.discovery import pointed_at

    try:
        with pointed_at(found.api_url):
            return asyncio.run(coroutine)
    except httpx.ConnectError:
        raise InputError(None, f"cannot reach the Prefect API at {found.describe()}") from None


def with_prefect_api(coroutine, api: str | None = None, announce: bool = True):
    """Run `coroutine` on the Prefect server the rule finds (`flows/runtime/discovery.py`), then
    say which (`announce`); none found, or a dead one, is one line."""
    from flows.runtime.discovery import require_prefect

    try:
        found = require_prefect(api)
    except InputError:
        coroutine.close()
        raise
    result = run_on(found, coroutine)
    if announce:
        found.announce()
    return result


@app.command("apply")
@exit_on_input_error
def apply(
    kind: Optional[List[str]] = typer.Option(None, "--kind", help="local, slurm or kubernetes (repeatable; default: all)."),
    name: Optional[str] = typer.Option(None, "--name", help="Pool name (with one --kind); default evalq-<kind>."),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Create the work pools from their base job templates, or update the templates."""
    from workpools.registry import KINDS

    kinds = kind or list(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(None, f"unknown pool kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    if name and len(kinds) != 1:
        raise InputError(None, "--name needs exactly one --kind")
    with_prefect_api(_apply(kinds, name, explicit=bool(kind)), api)


async def _apply(kinds: list[str], name: str | None, explicit: bool) -> None:
    from prefect.client.orchestration import get_client

    from flows.runtime.deployments import apply_deployments
    from flows.runtime.work_pools import apply_work_pool
    from workpools.local.deployment import apply_run_command_deployment
    from workpools.registry import KINDS

    async with get_client() as client:
        for kind in kinds:
            module = KINDS[kind].load()
            if module is None:
                if explicit:
                    raise InputError(None, f"pool kind {kind!r} is not available in this installation")
                print(f"skipped {kind}: not available in this installation", file=sys.stderr)
                continue
            pool = name or KINDS[kind].default_name
            outcome = await apply_work_pool(client, pool, module.WORK_POOL_TYPE, module.base_job_template())
            print(f"{outcome} work pool {pool} ({module.WORK_POOL_TYPE})")
            if kind in ("local", "kubernetes"):
                await apply_run_command_deployment(client, pool, name=kind)
                print(f"applied deployment run-command/{kind} on {pool}")
            if kind == "runner":  # the episodes' deployment for warm runners (a pool of another name: named after it)
                as_name = None if pool == KINDS[kind].default_name else pool
                for deployment in await apply_deployments(client, "runner", work_pool=pool, as_name=as_name):
                    print(f"applied deployment {deployment} on {pool}")


@exit_on_input_error
def submit(
    command: List[str] = typer.Argument(..., metavar="[NAME=value]... CMD [ARGS]...",
                                        help="The command, as an argv (no shell); leading NAME=value words set its environment."),
    gpus: Optional[int] = typer.Option(None, "-G", "--gpus", min=0, help="GPUs to lease (default 0, or the pinned ones)."),
    gpu_indices: Optional[str] = typer.Option(None, "-g", "--gpu-indices", "--gpu", help="Pin to these GPUs, e.g. 0 or 0,2."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help=f"Kill the command after SECONDS (or 90m, 4h, 3d); default {DEFAULT_TIMEOUT}, 0: never."),
    label: Optional[str] = typer.Option(None, "-L", "--label", help="Label (also a flow-run tag `label:...`)."),
    depends_on: List[str] = typer.Option([], "-D", "--depends-on", help="Start once this job ended, however (a queue id, run id or label; repeatable)."),
    after_success: List[str] = typer.Option([], "--after-success", help="Start once this job completed; fail if it did not (repeatable)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help=f"The seed ({{seed}} in argv, SEED in env); with --seeds N the first of N (default {FIRST_SEED})."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="How many seeds from --seed on (--seed 42 --seeds 4: 42..45), or a list: 0-4, 1,3,7."),
    gpu_free_threshold: Optional[float] = typer.Option(None, "--gpu-free-threshold", min=0.0, max=1.0,
                                                       help="Free memory fraction for a GPU to count as free (default: the host's, `evalq queue gpu-free-threshold`)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print `<queue id> <flow-run id> <name>` per job on stdout."),
    runner: bool = typer.Option(True, "--runner/--no-runner", envvar="EVALQ_QUEUE_RUNNER",
                                help="Start the queue's worker when nothing serves its pool."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be queued; create nothing."),
    home: Path = typer.Option(
        DEFAULT_HOME, "--home", envvar="EVALQ_QUEUE_HOME", help="Folder for the jobs' output files and captured environments."
    ),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Queue a command on the GPU-aware local queue (task-spooler style).

    Prints the queue id of each job (only that, so `J=$(evalq submit ...)` then `-D $J` chains);
    its flow run on stderr. Finds the Prefect server by the rule, else starts your `evalq
    server`, and starts the queue's worker when nothing serves the queue.
    """
    from workpools.local.gpus import GpuQueryError, query_gpus
    from workpools.local.service import ensure_worker, remember_started_server
    from workpools.local.submit import check_gpus, plan_jobs

    jobs = plan_jobs(command, gpus, gpu_indices, timeout, label, seeds, gpu_free_threshold, seed=seed)
    try:
        check_gpus(jobs, [gpu.index for gpu in query_gpus()])
    except GpuQueryError:
        pass  # no nvidia-smi here: the worker's machine decides
    if dry_run:
        print_plan(jobs, [*depends_on, *after_success])
        return
    home = home.expanduser().resolve()
    found = prefect_for(api, start=True)
    remember_started_server(home, found)
    runs, pool, served = run_on(found, _submit(jobs, depends_on, after_success, home))
    if runner and (started := ensure_worker(found.api_url, pool, home)) is not None:
        print(f"started the queue's worker (pid {started.pid}, pool {pool}; it stops after {started.idle_timeout:g} s "
              f"without jobs, `evalq queue shutdown` stops it; log {started.log})", file=sys.stderr)
    elif not runner and not served:
        print(f"warning: no worker polls work pool {pool}; the jobs wait until `evalq queue worker` runs", file=sys.stderr)
    for run, job in runs:
        if verbose:
            print(f"{job.queue_id}\t{run.id}\t{run.name}")
        else:
            print(job.queue_id)
            print(f"queued job {job.queue_id}: {run.name} (flow run {run.id})", file=sys.stderr)


submit.context_settings = {"allow_interspersed_args": False}
"""As `tsp`: options end at the command's first word, so its own options need no `--`."""


async def _submit(jobs, depends_on: list[str], after_success: list[str], home: Path) -> tuple[list, str, bool]:
    """(flow run, job) pairs, the queue's pool, and whether a worker polls it now."""
    from prefect.client.orchestration import get_client

    from workpools.local.submit import (
        ensure_queue_deployment,
        online_workers,
        queue_jobs,
        resolve_dependencies,
    )

    async with get_client() as client:
        deployment = await ensure_queue_deployment(client, report=lambda line: print(line, file=sys.stderr))
        after = await resolve_dependencies(client, depends_on, "-D")
        strict = await resolve_dependencies(client, after_success, "--after-success")
        runs = await queue_jobs(client, deployment, [job.model_copy(update={"depends_on": strict, "after": after}) for job in jobs], home)
        pool = deployment.work_pool_name
        return runs, pool, bool(await online_workers(client, pool))


def print_plan(jobs, depends_on: list[str]) -> None:
    """The dry-run table: one row per job that would be queued."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("#", "name", "GPUs", "timeout", "depends on", "command", title="would queue (dry run)")
    for number, job in enumerate(jobs, start=1):
        gpus = ",".join(map(str, job.gpu_indices)) if job.gpu_indices else str(job.gpus)
        timeout = "-" if job.timeout is None else f"{job.timeout:g}s"
        cells = (str(number), job.run_name(), gpus, timeout, ", ".join(depends_on) or "-", shlex.join(job.argv))
        table.add_row(*(Text(cell) for cell in cells))
    Console(width=200).print(table)
