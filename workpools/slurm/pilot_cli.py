"""`evalq workpools slurm-runners`: submit a SLURM job array of warm runners (or print it)."""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path
from typing import List, Optional

import typer
from pydantic import ValidationError

from flows.runtime.discovery import API_HELP
from generate.errors import InputError, exit_on_input_error, option_error
from workpools.runner.checks import checked_runner_server

OPTION_NAMES = {"work_queues": "--work-queue", "time_limit": "--time", "extra_sbatch": "--sbatch",
                "runner_command": "--evalq", "working_dir": "--chdir", "memory": "--mem"}


def runner_array(**values):
    """A `RunnerArray`, or `InputError` naming the first bad option."""
    from workpools.slurm.pilot import RunnerArray

    try:
        return RunnerArray(**values)
    except ValidationError as exc:
        raise option_error(exc, OPTION_NAMES) from None


@exit_on_input_error
def slurm_runners(
    pool: str = typer.Option(..., "--pool", help="Work pool of type evalq-runner."),
    nodes: int = typer.Option(..., "--nodes", help="Array tasks: one runner each."),
    slots: int = typer.Option(..., "--slots", help="Flow runs per runner at once."),
    idle_timeout: float = typer.Option(300.0, "--idle-timeout", help="A runner exits 0 after this many idle seconds."),
    work_queue: List[str] = typer.Option([], "--work-queue", help="Only these queues of the pool (repeatable)."),
    gres: Optional[str] = typer.Option(None, "--gres", help="Per task, e.g. gpu:1."),
    partition: Optional[str] = typer.Option(None, "--partition"),
    time: Optional[str] = typer.Option(None, "--time", help="Wall-clock limit per task, e.g. 8:00:00."),
    cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task"),
    memory: Optional[str] = typer.Option(None, "--mem", help="Memory per node, e.g. 64G."),
    account: Optional[str] = typer.Option(None, "--account"),
    qos: Optional[str] = typer.Option(None, "--qos"),
    setup: List[str] = typer.Option([], "--setup", help="Shell line before the runner, e.g. 'module load cuda' (repeatable)."),
    sbatch: List[str] = typer.Option([], "--sbatch", help="Extra sbatch option, e.g. --exclusive (repeatable)."),
    log_dir: Path = typer.Option(Path("runner-logs"), "--log-dir", help="One log per task here: <job-name>-<job>_<task>.log."),
    chdir: Optional[Path] = typer.Option(None, "--chdir", help="Directory the runners start in."),
    job_name: str = typer.Option("evalq-runner", "--job-name"),
    evalq: Optional[str] = typer.Option(None, "--evalq", help="How the nodes run evalq (default: this Python, -m flows.cli)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the server and pool, print the batch script; submit nothing."),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
    allow_loopback: bool = typer.Option(False, "--allow-loopback", help="Let runners use a loopback API URL (a single-node cluster)."),
    keep: Optional[int] = typer.Option(None, "--keep", min=1, metavar="N",
                                       help="Stay and resubmit pilots while the pool has work and fewer than N are queued or running."),
) -> None:
    """Submit warm runners as one SLURM job array: the queue wait is paid once per node, not per episode."""
    from workpools.slurm.commands import SlurmError
    from workpools.slurm.pilot import log_path, render, submit

    values = dict(
        pool=pool, work_queues=work_queue, nodes=nodes, slots=slots, idle_timeout=idle_timeout, gres=gres,
        partition=partition, time_limit=time, cpus_per_task=cpus_per_task, memory=memory, account=account, qos=qos,
        setup=setup, extra_sbatch=sbatch, log_dir=log_dir, working_dir=chdir, job_name=job_name,
    )
    if evalq is not None:
        values["runner_command"] = shlex.split(evalq)
    array = runner_array(**values)
    found = checked_runner_server(api, pool, allow_loopback)
    found.announce()
    if dry_run:
        print(render(array), end="")
        return
    try:
        array.log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(array.log_dir, f"cannot create the log directory: {exc.strerror or exc}") from None
    if keep is not None:
        from flows.runtime.discovery import pointed_at
        from workpools.slurm.keeper import keep_pilots

        with pointed_at(found.api_url):
            code = keep_pilots(array, keep, {**os.environ, "PREFECT_API_URL": found.for_other_nodes})
        raise typer.Exit(code)
    try:
        job_id = asyncio.run(submit(array, {**os.environ, "PREFECT_API_URL": found.for_other_nodes}))
    except SlurmError as exc:
        raise InputError(None, str(exc)) from None
    print(job_id)
    typer.echo(f"{nodes} runner(s) on pool {pool!r}; logs: {log_path(array, job_id, 0)} ...", err=True)
