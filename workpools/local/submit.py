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
    RUN_COMMAND_DEPLOYMENT_NAME,
    CommandJob,
    format_indices,
    label_tag,
)
from workpools.local.options import (
    VISIBLE_DEVICES,
    parse_timeout,
    split_environment,
    visible_devices,
)
from workpools.local.seeds import seed_list, substitute

DEFAULT_HOME = Path("~/.evalq/queue")
"""Where jobs' output files and captured environments live (`--home`, `EVALQ_QUEUE_HOME`)."""


def queue_home(home: Path | None = None) -> Path:
    """`home`, else `EVALQ_QUEUE_HOME`, else `DEFAULT_HOME`, absolute."""
    return Path(home or os.environ.get("EVALQ_QUEUE_HOME") or DEFAULT_HOME).expanduser().resolve()


def plan_jobs(
    words: list[str],
    gpus: int | None = None,
    gpu_indices: str | None = None,
    timeout: str | None = None,
    label: str | None = None,
    seeds: str | None = None,
    gpu_free_threshold: float | None = None,
    cwd: str | None = None,
    seed: int | None = None,
    environ: dict[str, str] | None = None,
) -> list[CommandJob]:
    """The jobs one `evalq submit` queues (one per seed); dependencies are added later.

    `words` is the command as typed (leading `NAME=value` words set its environment), `timeout`
    as typed (default `DEFAULT_TIMEOUT`, "0": none), `environ` the submitter's environment
    (its `EVALQ_VISIBLE_DEVICES` / `TS_VISIBLE_DEVICES` limit the GPUs)."""
    env, argv = split_environment(words)
    if not argv:
        raise InputError(None, "no command given: evalq submit [OPTIONS] [NAME=value]... CMD [ARGS]...")
    try:
        pinned = parse_indices(gpu_indices) if gpu_indices else None
        seed_values = seed_list(seed, seeds)
        seconds = parse_timeout(timeout)
        visible = visible_devices(os.environ if environ is None else environ)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if pinned and gpus is not None and gpus != len(pinned):
        raise InputError(None, f"--gpus {gpus} disagrees with --gpu-indices {gpu_indices}")
    if pinned and visible is not None and not set(pinned) <= set(visible):
        raise InputError(None, f"-g/--gpu-indices {gpu_indices}: not among the visible GPUs {format_indices(visible)} "
                               f"({visible_source(environ)})")
    count = len(pinned) if pinned else (gpus or 0)
    common = dict(
        gpus=count, gpu_indices=pinned, timeout=seconds, label=label, visible_gpus=visible,
        gpu_free_threshold=gpu_free_threshold, cwd=cwd or os.getcwd(),
    )
    return [
        CommandJob(argv=argv, env=env, **common)
        if value is None
        else CommandJob(argv=substitute(argv, value), seed=value, env={"SEED": str(value), **env}, **common)
        for value in seed_values
    ]


def visible_source(environ: dict[str, str] | None) -> str:
    """Which variable limited the GPUs, for messages."""
    environ = os.environ if environ is None else environ
    return next((name for name in VISIBLE_DEVICES if environ.get(name, "").strip()), VISIBLE_DEVICES[-1])


def check_gpus(jobs: list[CommandJob], indices: list[int]) -> None:
    """Fail early when a job asks for more GPUs, or other GPUs, than this machine lets it have."""
    for job in jobs[:1]:
        usable = [index for index in indices if job.visible_gpus is None or index in job.visible_gpus]
        where = "this machine has" if job.visible_gpus is None else f"this machine has {len(indices)}, visible to it"
        if job.gpus > len(usable):
            raise InputError(None, f"the job asks for {job.gpus} GPUs; {where} {len(usable)}")
        missing = sorted(set(job.gpu_indices or []) - set(indices))
        if missing:
            raise InputError(None, f"no GPU {missing} on this machine (it has {indices})")


async def resolve_dependencies(client, refs: list[str], option: str = "-D") -> list[UUID]:
    """Flow-run ids for `-D` / `--after-success` values (`option`, for messages), each one or
    comma-separated: a queue id, a run id, or a label (every run with that label)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    from workpools.local.entries import find_entry

    run_ids: list[UUID] = []
    for ref in (part.strip() for value in refs for part in value.split(",") if part.strip()):
        if ref.isdigit():
            entry = await find_entry(client, int(ref))
            if entry is None:
                raise InputError(None, f"{option} {ref}: no job {ref} in the queue")
            run_ids.append(entry.run_id)
            continue
        try:
            run_ids.append((await client.read_flow_run(UUID(ref))).id)
            continue
        except ValueError:
            pass
        except ObjectNotFound:
            raise InputError(None, f"{option} {ref}: no such flow run") from None
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[COMMAND_TAG, label_tag(ref)])),
            sort=FlowRunSort.ID_DESC,  # explicit: this server rejects `sort: null`
            limit=200,
        )
        if not runs:
            raise InputError(None, f"{option} {ref}: no flow run with that id or label")
        run_ids.extend(run.id for run in runs)
    return list(dict.fromkeys(run_ids))


async def ensure_queue_deployment(client, report) -> object:
    """The queue's `run-command/local` deployment; on a server that has none yet, its pool
    (`evalq-local`) and the deployment are created first, and `report` is told in one line."""
    from prefect.exceptions import ObjectNotFound

    from flows.naming import LOCAL_WORK_POOL
    from flows.runtime.work_pools import apply_work_pool
    from workpools.local import WORK_POOL_TYPE, base_job_template
    from workpools.local.deployment import apply_run_command_deployment

    try:
        return await client.read_deployment_by_name(RUN_COMMAND_DEPLOYMENT)
    except ObjectNotFound:
        pass
    await apply_work_pool(client, LOCAL_WORK_POOL, WORK_POOL_TYPE, base_job_template())
    await apply_run_command_deployment(client, LOCAL_WORK_POOL, name=RUN_COMMAND_DEPLOYMENT_NAME)
    report(f"created deployment {RUN_COMMAND_DEPLOYMENT} on work pool {LOCAL_WORK_POOL} (the queue's first use on this server)")
    return await client.read_deployment_by_name(RUN_COMMAND_DEPLOYMENT)


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
