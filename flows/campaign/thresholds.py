"""What counts against the stop/resume thresholds besides the campaign's own runs.

By default the thresholds count the campaign's runs in flight (the dispatcher knows them). With
`--count pool` they count every flow run in flight on the deployment's work pool, as the batch
submitter counted every pipeline running on its cluster: the rest of the pool (other batches,
other users' runs) is read before each dispatch, one count query, and handed to the dispatcher
as `others_in_flight`. In flight on a pool: Pending, Running, Cancelling, Paused, and Scheduled
once due (a run scheduled for later, such as a batch's purge after `--keep-for`, is not).
"""

from __future__ import annotations

import datetime as dt

IN_FLIGHT_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED")


async def runs_in_flight_on_pool(client, pool: str) -> int:
    """Flow runs in flight on work pool `pool`, whoever created them (one count query)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    due = dt.datetime.now(dt.timezone.utc).isoformat()
    run_filter = FlowRunFilter.model_validate({"state": {"type": {"any_": list(IN_FLIGHT_TYPES)}},
                                               "expected_start_time": {"before_": due}})
    return await client.count_flow_runs(flow_run_filter=run_filter,
                                        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))


def others_in_flight(on_pool: int, own: int) -> int:
    """Runs on the pool that are not the campaign's own (never below 0: a run of ours may have
    ended between the count and our last read, or not be counted yet)."""
    return max(0, on_pool - own)
