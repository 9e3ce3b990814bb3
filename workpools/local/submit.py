"""`evalq submit`: turn task-spooler style options into `run-command` flow runs."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID

from generate.errors import InputError
from workpools.local.allocation import parse_indices
from workpools.local.job import (
    COMMAND_TAG,
    RUN_COMMAND_DEPLOYMENT,
    CommandJob,
    label_tag,
)
from workpools.local.seeds import parse_seeds, substitute

DEFAULT_HOME = Path("~/.evalq/queue")
"""Where jobs' output files and captured environments live (`--home`, `EVALQ_QUEUE_HOME`)."""


def plan_jobs(
    argv: list[str],
    gpus: int | None = None,
    gpu_indices: str | None = None,
    timeout: float | None = None,
    label: str | None = None,
    seeds: str | None = None,
    gpu_free_threshold: float = 0.9,
    cwd: str | None = None,
) -> list[CommandJob]:
    """The jobs one `evalq submit` queues (one per seed); dependencies are added later."""
    if not argv:
        raise InputError(None, "no command given: evalq submit [OPTIONS] -- CMD [ARGS]...")
    try:
        pinned = parse_indices(gpu_indices) if gpu_indices else None
        seed_list = parse_seeds(seeds) if seeds else [None]
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if pinned and gpus is not None and gpus != len(pinned):
        raise InputError(None, f"--gpus {gpus} disagrees with --gpu-indices {gpu_indices}")
    count = len(pinned) if pinned else (gpus or 0)
    common = dict(
        gpus=count, gpu_indices=pinned, timeout=timeout, label=label,
        gpu_free_threshold=gpu_free_threshold, cwd=cwd or os.getcwd(),
    )
    return [
        CommandJob(argv=argv, **common)
        if seed is None
        else CommandJob(argv=substitute(argv, seed), seed=seed, env={"SEED": str(seed)}, **common)
        for seed in seed_list
    ]


def check_gpus(jobs: list[CommandJob], indices: list[int]) -> None:
    """Fail early when a job asks for more GPUs, or other GPUs, than this machine has."""
    for job in jobs[:1]:
        if job.gpus > len(indices):
            raise InputError(None, f"the job asks for {job.gpus} GPUs; this machine has {len(indices)}")
        missing = sorted(set(job.gpu_indices or []) - set(indices))
        if missing:
            raise InputError(None, f"no GPU {missing} on this machine (it has {indices})")


async def resolve_dependencies(client, refs: list[str]) -> list[UUID]:
    """Flow-run ids for `--depends-on` values: a queue id, a run id, or a label (every run with that label)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    from workpools.local.entries import find_entry

    run_ids: list[UUID] = []
    for ref in refs:
        if ref.isdigit():
            entry = await find_entry(client, int(ref))
            if entry is None:
                raise InputError(None, f"--depends-on {ref}: no job {ref} in the queue")
            run_ids.append(entry.run_id)
            continue
        try:
            run_ids.append((await client.read_flow_run(UUID(ref))).id)
            continue
        except ValueError:
            pass
        except ObjectNotFound:
            raise InputError(None, f"--depends-on {ref}: no such flow run") from None
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[COMMAND_TAG, label_tag(ref)])),
            sort=FlowRunSort.ID_DESC,  # explicit: this server rejects `sort: null`
            limit=200,
        )
        if not runs:
            raise InputError(None, f"--depends-on {ref}: no flow run with that id or label")
        run_ids.extend(run.id for run in runs)
    return list(dict.fromkeys(run_ids))


async def find_deployment(client, name: str = RUN_COMMAND_DEPLOYMENT):
    """The `run-command` deployment; a clear error if `evalq workpools apply` has not made it."""
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise InputError(None, f"no deployment {name}: run `evalq workpools apply --kind local` first") from None


def output_paths(home: Path, queue_id: int) -> dict[str, str]:
    """The job's stdout/stderr files: `<home>/<id>.out` and `<home>/<id>.err`."""
    return {"stdout_path": str(home / f"{queue_id}.out"), "stderr_path": str(home / f"{queue_id}.err")}


async def queue_jobs(client, deployment, jobs: list[CommandJob], home: Path) -> list[tuple]:
    """Create one flow run per job on the `run-command` deployment, each with a queue id and
    this process's environment captured; (flow run, job as queued) pairs."""
    from workpools.local.environment import capture_environment
    from workpools.local.ids import create_numbered_run

    home = home.expanduser().resolve()
    queued = []
    for job in jobs:
        env_file = capture_environment(home)
        try:
            queued.append(await create_numbered_run(
                client, deployment.id, job.model_copy(update={"env_file": str(env_file)}),
                lambda queue_id: output_paths(home, queue_id),
            ))
        except BaseException:
            env_file.unlink(missing_ok=True)
            raise
    return queued


async def online_workers(client, pool: str) -> int:
    """How many workers poll `pool` right now."""
    from prefect.client.schemas.objects import WorkerStatus

    workers = await client.read_workers_for_work_pool(pool, offset=0, limit=200)
    return sum(1 for worker in workers if worker.status == WorkerStatus.ONLINE)
