"""`--keep-for`: a batch drops its finished runs by itself that long after they ended, as the
batch submitter's scheduler collected its finished jobs after about an hour. Results are never
touched (the purge is `evalq batch purge`'s, `flows/reports/purge.py`).

While the batch runs, it deletes every `KEEP_CHECK_SECONDS` the runs that ended more than
`--keep-for` ago (`Keeper`). When it ends, what ended since is left to Prefect's scheduler: a
run of the `batch-purge` flow, scheduled `--keep-for` later on the items' work pool, deletes
every run of the batch that ended before the batch did (`schedule_purge`; one such run per
batch, a newer one replaces it). It runs when a
worker or runner serves the pool at that time: on the embedded stack, the next command that
starts its runner (`evalq batch run`, `evalq campaign run`, `evalq demo`) runs it once due.
"""

from __future__ import annotations

import datetime as dt
from typing import Collection
from uuid import UUID, uuid4

from prefect import flow, get_client, get_run_logger

from flows.naming import BATCH_PURGE_FLOW, BATCH_PURGE_TAG, TAG, campaign_tag
from flows.reports.purge import delete_flow_runs, purge_campaign

KEEP_CHECK_SECONDS = 60.0


@flow(name=BATCH_PURGE_FLOW, persist_result=False)
async def purge_batch(batch: str, ended_before: dt.datetime) -> dict:
    """Delete the batch's runs that ended before `ended_before` (when the batch ended; this run
    is scheduled `--keep-for` after that, and a worker may start it a few seconds early)."""
    if ended_before.tzinfo is None:
        ended_before = ended_before.replace(tzinfo=dt.timezone.utc)
    async with get_client() as client:
        age = max(dt.timedelta(0), dt.datetime.now(dt.timezone.utc) - ended_before)
        result = await purge_campaign(client, batch, age, force=True)
    get_run_logger().info("Batch %s: deleted %d item runs and %d batch runs; %d kept", batch,
                          sum(result.episode_runs.values()), result.campaign_runs, result.kept_runs)
    return result.model_dump(mode="json")


class Keeper:
    """Deletes the batch's runs that ended more than `seconds` ago, every `KEEP_CHECK_SECONDS`."""

    def __init__(self, batch: str, seconds: float, logger, every: float = KEEP_CHECK_SECONDS):
        self.batch, self.seconds, self.logger, self.every = batch, seconds, logger, every
        self.checked: dt.datetime | None = None

    async def maintain(self, client, now: dt.datetime, in_flight: Collection[UUID] = ()) -> None:
        """Drop what ended `seconds` ago, but the runs the loop has not settled (`in_flight`):
        a run deleted before the loop read its end would stay in flight for ever."""
        if self.checked is not None and (now - self.checked).total_seconds() < min(self.every, self.seconds):
            return
        self.checked = now
        try:
            result = await purge_campaign(client, self.batch, dt.timedelta(seconds=self.seconds), force=True,
                                          spare={str(run_id) for run_id in in_flight})
        except Exception as exc:  # noqa: BLE001 - housekeeping never stops a batch: next time
            self.logger.warning("Could not drop the batch's finished runs: %s", exc)
            return
        if deleted := sum(result.episode_runs.values()) + result.campaign_runs:
            self.logger.info("Dropped %d runs that ended more than %g s ago (--keep-for)", deleted, self.seconds)


async def scheduled_purges(client, batch: str) -> list:
    """The batch's `batch-purge` runs that have not started."""
    from prefect.client.schemas.filters import FlowRunFilter

    run_filter = FlowRunFilter.model_validate({"tags": {"all_": [BATCH_PURGE_TAG, campaign_tag(batch)]},
                                               "state": {"type": {"any_": ["SCHEDULED"]}}})
    return await client.read_flow_runs(flow_run_filter=run_filter)


async def schedule_purge(client, batch: str, deployment_id, seconds: float) -> dt.datetime:
    """A `batch-purge` run of `deployment_id`, `seconds` from now, instead of any earlier one."""
    from prefect.states import Scheduled

    await delete_flow_runs(client, [str(run.id) for run in await scheduled_purges(client, batch)])
    now = dt.datetime.now(dt.timezone.utc)
    at = now + dt.timedelta(seconds=seconds)
    await client.create_flow_run_from_deployment(
        deployment_id, parameters={"batch": batch, "ended_before": now.isoformat()}, state=Scheduled(scheduled_time=at),
        name=f"{batch}: drop its runs (--keep-for {seconds:g} s)", tags=[TAG, BATCH_PURGE_TAG, campaign_tag(batch)],
        idempotency_key=f"evalq:{batch}:purge:{uuid4().hex}",
    )
    return at
