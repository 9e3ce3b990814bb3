"""Reading a campaign back from the Prefect server: its campaign flow runs, its plan, which
server each failed episode held, the jobs whose metrics exist, and the report that puts them
together (`report.py` groups them; the rerun rules are `flows/campaign/history.py`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect.client.schemas.objects import StateType
from pydantic import BaseModel

from flows.campaign.history import (
    FINAL_TYPES,
    PAGE,
    EpisodeRecord,
    read_episode_records,
)
from flows.campaign.plan import CampaignPlan
from flows.naming import (
    DISPATCH_FLOWS,
    SLOT_ACQUIRED,
    campaign_plan_variable,
    flow_run_resource_id,
)
from flows.reports.report import CampaignReport, build_report
from flows.slots.events import SlotEvent

EVENTS_PAGE = 50
"""The most events (and flow runs in a bulk delete) the API takes in one call."""


ACTIVE_TYPES = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED]


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- the campaign flow runs themselves -------------------------------------------------------
class CampaignFlowRun(BaseModel):
    id: str
    name: str
    campaign: str
    state_type: StateType | None
    end_time: dt.datetime | None

    @property
    def final(self) -> bool:
        return self.state_type in FINAL_TYPES


async def campaign_flow_runs(client, campaign: str | None = None, active_only: bool = False) -> list[CampaignFlowRun]:
    """Runs of the flows that dispatch campaigns, `campaign` and `batch` (for one campaign name,
    by their `name` parameter)."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    flow_filter = FlowFilter(name=FlowFilterName(any_=list(DISPATCH_FLOWS)))
    run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE_TYPES))) if active_only else None
    found, offset = [], 0
    while True:
        page = await client.read_flow_runs(flow_filter=flow_filter, flow_run_filter=run_filter, limit=PAGE, offset=offset)
        for run in page:
            name = str((run.parameters or {}).get("name", ""))
            if campaign is None or name == campaign:
                found.append(CampaignFlowRun(id=str(run.id), name=run.name, campaign=name,
                                             state_type=run.state.type if run.state else None, end_time=run.end_time))
        if len(page) < PAGE:
            return found
        offset += PAGE


async def plan_of(client, campaign: str) -> CampaignPlan:
    variable = await client.read_variable_by_name(campaign_plan_variable(campaign))
    return CampaignPlan.read(variable.value if variable is not None else None)


# -- report ----------------------------------------------------------------------------------
async def servers_of_runs(client, run_ids: list[str], since: dt.datetime) -> dict[str, list[tuple[dt.datetime, str]]]:
    """Run id -> the policy servers it leased (when, address), in time order, from
    `evalq.slot.acquired` events (a run rerun in place leases once per attempt)."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventOrder,
        EventRelatedFilter,
    )

    servers: dict[str, list[tuple[dt.datetime, str]]] = {}
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
    for chunk in batches(run_ids, EVENTS_PAGE):
        event_filter = EventFilter(
            event=EventNameFilter(name=[SLOT_ACQUIRED]),
            related=EventRelatedFilter(id=[flow_run_resource_id(run_id) for run_id in chunk]),
            occurred=EventOccurredFilter(since=since, until=until),
            order=EventOrder.ASC,
        )
        page = await client.read_events(filter=event_filter, limit=EVENTS_PAGE)
        while True:
            for event in page.events:
                acquired = SlotEvent.from_event(event.model_dump(mode="json"))
                if acquired.address and acquired.flow_run_id:
                    servers.setdefault(acquired.flow_run_id, []).append((event.occurred, acquired.address))
            if not page.next_page:
                break
            page = await client.read_events_page(page.next_page)
    return servers


def done_job_ids(records: list[EpisodeRecord], results_dir: Path | None) -> set[str]:
    """Jobs whose metrics file exists (under `results_dir`, else where each run wrote it)."""
    done = set()
    for record in records:
        path = record.metrics_path(str(results_dir) if results_dir else None)
        if path is not None and path.exists():
            done.add(record.job_id)
    return done


async def gather_report(client, campaign: str, results_dir: Path | None = None) -> CampaignReport:
    """The report of the campaign from the server's truth: every run, the histories of those
    that failed or were rerun in place, their slot leases, and the metrics files."""
    return (await gather_report_and_records(client, campaign, results_dir))[0]


async def gather_report_and_records(client, campaign: str, results_dir: Path | None = None,
                                    slots: bool = True) -> tuple[CampaignReport, list[EpisodeRecord]]:
    """`gather_report`, and the runs it was made of; without `slots`, no slot events are read
    (a batch's items hold none)."""
    records = await read_episode_records(client, campaign, every_attempt=True)
    failed = [r.run_id for r in records if r.failures]
    since = min((r.created for r in records if r.created), default=dt.datetime.now(dt.timezone.utc)) - dt.timedelta(minutes=5)
    servers = await servers_of_runs(client, failed, since) if failed and slots else {}
    running = any(not run.final for run in await campaign_flow_runs(client, campaign, active_only=True))
    plan = await plan_of(client, campaign)
    return build_report(campaign, records, done_job_ids(records, results_dir), servers, running, plan.total), records
