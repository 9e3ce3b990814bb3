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
from workpools.local.submit import DEFAULT_HOME
from workpools.slurm.pilot_cli import slurm_runners

app = typer.Typer(no_args_is_help=True, help="Create or update the SLURM, Kubernetes and local work pools.")


@app.callback()
def workpools() -> None:
    """Create or update the SLURM, Kubernetes and local work pools."""


app.command("slurm-runners")(slurm_runners)


def with_prefect_api(coroutine, api: str | None = None, announce: bool = True):
    """Run `coroutine` on the Prefect server the rule finds (`flows/runtime/discovery.py`), then
    say which (`announce`); none found, or a dead one, is one line."""
    import httpx

    from flows.runtime.discovery import pointed_at, require_prefect

    try:
        found = require_prefect(api)
    except InputError:
        coroutine.close()
        raise
    try:
        with pointed_at(found.api_url):
            result = asyncio.run(coroutine)
    except httpx.ConnectError:
        raise InputError(None, f"cannot reach the Prefect API at {found.describe()}") from None
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
    command: List[str] = typer.Argument(..., metavar="-- CMD [ARGS]...", help="The command, as an argv (no shell)."),
    gpus: Optional[int] = typer.Option(None, "-G", "--gpus", min=0, help="GPUs to lease (default 0, or the pinned ones)."),
    gpu_indices: Optional[str] = typer.Option(None, "--gpu-indices", help="Pin to these GPUs, e.g. 0,2."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.001, help="Kill the command after SECONDS."),
    label: Optional[str] = typer.Option(None, "-L", "--label", help="Label (also a flow-run tag `label:...`)."),
    depends_on: List[str] = typer.Option([], "-D", "--depends-on", help="Run after this run id or label succeeded (repeatable)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="One job per seed, e.g. 0-4: {seed} in argv, SEED in env."),
    gpu_free_threshold: float = typer.Option(0.9, "--gpu-free-threshold", min=0.0, max=1.0, help="Free memory fraction for a GPU to count as free."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be queued; create nothing."),
    home: Path = typer.Option(
        DEFAULT_HOME, "--home", envvar="EVALQ_QUEUE_HOME", help="Folder for the jobs' output files and captured environments."
    ),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Queue a command on the GPU-aware local pool (task-spooler style).

    Prints one `<queue id> <flow-run id> <name>` line per job; `evalq queue` shows them.
    """
    from workpools.local.gpus import GpuQueryError, query_gpus
    from workpools.local.submit import check_gpus, plan_jobs

    jobs = plan_jobs(command, gpus, gpu_indices, timeout, label, seeds, gpu_free_threshold)
    try:
        check_gpus(jobs, [gpu.index for gpu in query_gpus()])
    except GpuQueryError:
        pass  # no nvidia-smi here: the worker's machine decides
    if dry_run:
        print_plan(jobs, depends_on)
        return
    for run, job in with_prefect_api(_submit(jobs, depends_on, home), api):
        print(f"{job.queue_id}\t{run.id}\t{run.name}")


async def _submit(jobs, depends_on: list[str], home: Path) -> list:
    from prefect.client.orchestration import get_client

    from workpools.local.submit import (
        find_deployment,
        online_workers,
        queue_jobs,
        resolve_dependencies,
    )

    async with get_client() as client:
        deployment = await find_deployment(client)
        run_ids = await resolve_dependencies(client, depends_on)
        runs = await queue_jobs(client, deployment, [job.model_copy(update={"depends_on": run_ids}) for job in jobs], home)
        pool = deployment.work_pool_name
        if not await online_workers(client, pool):
            print(
                f"warning: no worker polls work pool {pool}; the jobs wait until "
                f"`prefect worker start --pool {pool}` runs",
                file=sys.stderr,
            )
        return runs


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
