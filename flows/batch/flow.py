"""The `batch` flow: read the item list, check and apply what the items need (`deployments.py`),
publish the plan, run the campaign's loop over the items (`kind.py`), then write
`<results-dir>/failed_items.txt` and schedule the purge of `--keep-for` (`keep.py`)."""

from __future__ import annotations

import time

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.states import Failed

from flows.batch.deployments import BatchMisconfigured, prepare
from flows.batch.items import FAILED_ITEMS_FILE, BatchItem, read_item_list
from flows.batch.keep import Keeper, schedule_purge
from flows.batch.kind import BatchItems
from flows.batch.settings import BatchSettings
from flows.campaign.loop import JobLoop
from flows.campaign.outcomes import Tally
from flows.campaign.outputs import tally_summary, write_failed_file
from flows.campaign.plan import publish_plan
from flows.cloudlogging.attach import attach_cloud_logging
from flows.naming import BATCH_FLOW, MISCONFIGURED_STATE, artifact_key
from flows.runtime.outages import handle_api_outages


@flow(name=BATCH_FLOW, persist_result=False)
async def batch(
    name: str,
    items_file: str,
    results_dir: str = "results",
    pool: str | None = None,
    command: list[str] | None = None,
    deployment: str = "",
    parameters: dict | None = None,
    job_variables: dict | None = None,
    max_in_flight: int | None = None,
    resume_at: int | None = None,
    resume_below: int | None = None,
    count: str = "own",
    submit_interval: float = 0.0,
    max_attempts: int = 3,
    timeout_seconds: float | None = None,
    keep_for_seconds: float | None = None,
    stats_interval: float = 60.0,
    tick_seconds: float = 1.0,
    paused: bool = False,
    cwd: str | None = None,
) -> dict:
    """Run one pipeline per item of the list, at most `max_in_flight` at once."""
    settings = BatchSettings.model_validate({**locals(), "parameters": parameters or {}, "job_variables": job_variables or {}})
    logger = get_run_logger()
    handle_api_outages()
    attach_cloud_logging(campaign=name)
    ids = read_item_list(items_file)
    started = time.time()
    async with get_client() as client:
        try:
            pipeline, purge_deployment = await prepare(client, settings)
        except BatchMisconfigured as exc:
            logger.error("Misconfigured: %s", exc)
            return Failed(name=MISCONFIGURED_STATE, message=str(exc))
        await publish_plan(client, name, {(name, pipeline): len(ids)})
        keeper = Keeper(name, keep_for_seconds, logger) if keep_for_seconds is not None else None
        loop = JobLoop([BatchItem(id=item, pool=settings.pool) for item in ids], BatchItems(settings, pipeline, keeper),
                       settings, client)
        tally = await loop.run()
        if (early := loop.ended_early()) is not None:
            return early
        summary = await finish(client, tally, settings, time.time() - started)
        if purge_deployment is not None:
            at = await schedule_purge(client, name, purge_deployment, keep_for_seconds)
            logger.info("Its finished runs are dropped at %s (--keep-for %g s) by a run of the batch-purge flow on %s",
                        f"{at:%Y-%m-%d %H:%M:%S} UTC", keep_for_seconds, settings.pool)
            summary["purge_at"] = at.isoformat()
        return summary


async def finish(client, tally: Tally, settings: BatchSettings, wall: float) -> dict:
    """Write `failed_items.txt` (failed, not cancelled, item ids; `--items` reads it), publish the
    counts as a table artifact, and return the summary."""
    failed_file = write_failed_file(settings.results_dir, tally.failures, FAILED_ITEMS_FILE)
    done = tally.already_done + tally.done
    await acreate_table_artifact(
        table=[{"items": tally.total, "done": done, "failed": len(tally.failures), "cancelled": len(tally.cancelled),
                "retried": tally.retried}],
        key=artifact_key(settings.name),
        description=f"Batch {settings.name}: {done}/{tally.total} done, {len(tally.failures)} failed, "
                    f"{len(tally.cancelled)} cancelled",
    )
    return {"batch": settings.name, "pool": settings.pool, **tally_summary(tally, wall, settings.results_dir, failed_file)}
