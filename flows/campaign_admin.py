"""Reading and cleaning up campaigns on a Prefect server: report, purge, list (the I/O side).

The grouping is in `campaign_report.py`, the rerun rules in `history.py`; this module only
asks Prefect (and the results folder) and hands the answers over.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from prefect.client.schemas.objects import StateType
from pydantic import BaseModel

from flows.campaign_report import CampaignReport, build_report
from flows.history import FINAL_TYPES, PAGE, EpisodeRecord, read_episode_records
from flows.naming import (
    CAMPAIGN_FLOW,
    EPISODE_TAG,
    PLAN_VARIABLE_PREFIX,
    SLOT_ACQUIRED,
    campaign_of_plan_variable,
    campaign_plan_variable,
    campaign_tag,
    flow_run_resource_id,
    pause_variable,
)
from flows.plan import plan_artifact_key
from flows.slot_events import SlotEvent

if TYPE_CHECKING:
    from flows.campaign import CampaignPlan
from flows.report import artifact_key, leaderboard_artifact_key
from flows.waiting import WaitExplanation

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
    """Runs of the `campaign` flow (for one campaign name, by its `name` parameter)."""
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
    )

    flow_filter = FlowFilter(name=FlowFilterName(any_=[CAMPAIGN_FLOW]))
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
    from flows.campaign import CampaignPlan

    variable = await client.read_variable_by_name(campaign_plan_variable(campaign))
    return CampaignPlan.read(variable.value if variable is not None else None)


# -- report ----------------------------------------------------------------------------------
async def servers_of_runs(client, run_ids: list[str], since: dt.datetime) -> dict[str, str]:
    """Run id -> the policy server it leased last, from `evalq.slot.acquired` events."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder, EventRelatedFilter

    servers: dict[str, str] = {}
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
                    servers[acquired.flow_run_id] = acquired.address
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
    records = await read_episode_records(client, campaign)
    failed = [r.run_id for r in records if r.final and r.state_type != StateType.COMPLETED]
    since = min((r.created for r in records if r.created), default=dt.datetime.now(dt.timezone.utc)) - dt.timedelta(minutes=5)
    servers = await servers_of_runs(client, failed, since) if failed else {}
    running = any(not run.final for run in await campaign_flow_runs(client, campaign, active_only=True))
    plan = await plan_of(client, campaign)
    return build_report(campaign, records, done_job_ids(records, results_dir), servers, running, plan.total)


# -- purge -----------------------------------------------------------------------------------
class PurgeResult(BaseModel):
    campaign: str
    dry_run: bool
    episode_runs: dict[str, int]
    """Deleted episode runs by state name."""
    campaign_runs: int
    kept_runs: int
    """Runs left: not finished, or newer than `--older-than`."""
    variables: list[str]
    artifacts: list[str]


def purgeable(finished_at: dt.datetime | None, final: bool, cutoff: dt.datetime | None) -> bool:
    """Finished, and (given a cutoff) finished before it."""
    if not final:
        return False
    return cutoff is None or (finished_at is not None and finished_at < cutoff)


class CampaignRunning(Exception):
    """The campaign is running: purge refuses unless forced."""


async def purge_campaign(
    client, campaign: str, older_than: dt.timedelta | None = None, dry_run: bool = False, force: bool = False
) -> PurgeResult:
    """Delete the campaign's finished flow runs, and once none is left its variables and
    artifacts. Never touches metrics or results files."""
    records = await read_episode_records(client, campaign)
    flow_runs = await campaign_flow_runs(client, campaign)
    active = [r for r in records if not r.final]
    running_flows = [r for r in flow_runs if not r.final]
    if (active or running_flows) and not force:
        raise CampaignRunning(
            f"campaign {campaign!r} is running ({len(running_flows)} campaign flow runs active, "
            f"{len(active)} episodes in flight); use --force to purge its finished runs anyway"
        )
    cutoff = dt.datetime.now(dt.timezone.utc) - older_than if older_than else None
    episodes = [r for r in records if purgeable(r.end_time or r.created, r.final, cutoff)]
    campaigns = [r for r in flow_runs if purgeable(r.end_time, r.final, cutoff)]
    kept = len(records) + len(flow_runs) - len(episodes) - len(campaigns)
    variables, artifacts = [], []
    if kept == 0:
        from flows.retry_requests import pending_requests

        variables = [campaign_plan_variable(campaign), pause_variable(campaign)]
        variables += [name for name, _ in await pending_requests(client, campaign)]  # retry requests left
        artifacts = [artifact_key(campaign), leaderboard_artifact_key(campaign), plan_artifact_key(campaign)]
    if not dry_run:
        await delete_flow_runs(client, [r.run_id for r in episodes] + [r.id for r in campaigns])
        variables = [name for name in variables if await delete_variable(client, name)]
        artifacts = [key for key in artifacts if await delete_artifacts(client, key)]
    return PurgeResult(
        campaign=campaign, dry_run=dry_run, episode_runs=dict(sorted(Counter(r.state_name for r in episodes).items())),
        campaign_runs=len(campaigns), kept_runs=kept, variables=variables, artifacts=artifacts,
    )


async def delete_flow_runs(client, run_ids: list[str]) -> None:
    """Prefect's bulk delete, at most 50 runs per call."""
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    for chunk in batches(run_ids, EVENTS_PAGE):
        body = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in chunk])).model_dump(mode="json", exclude_unset=True)
        await client.request("POST", "/flow_runs/bulk_delete", json={"flow_runs": body, "limit": len(chunk)})


async def delete_variable(client, name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        await client.delete_variable_by_name(name)
    except ObjectNotFound:
        return False
    return True


async def delete_artifacts(client, key: str) -> bool:
    """Every version of the artifact `key`; False if there was none."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    for artifact in found:
        await client.delete_artifact(artifact.id)
    return bool(found)


# -- list ------------------------------------------------------------------------------------
class CampaignSummary(BaseModel):
    name: str
    planned: int | None
    runs: int
    completed: int
    """Episode runs that completed (one per job done)."""
    failed_attempts: int
    cancelled: int
    in_flight: int
    state: str
    """running | paused | done | incomplete."""
    updated: dt.datetime | None


async def state_counts(client, tags: list[str]) -> Counter:
    """Runs with all `tags` by state type, in one query (the run-history endpoint over one
    interval spanning all time)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    body = {
        "history_start": "2000-01-01T00:00:00Z",
        "history_end": "2100-01-01T00:00:00Z",
        "history_interval_seconds": 100 * 366 * 86400.0,
        "flow_runs": FlowRunFilter(tags=FlowRunFilterTags(all_=tags)).model_dump(mode="json", exclude_unset=True),
    }
    response = await client.request("POST", "/flow_runs/history", json=body)
    counts: Counter = Counter()
    for interval in response.json():
        for state in interval["states"]:
            counts[state["state_type"]] += state["count_runs"]
    return counts


def campaign_state(counts: Counter, planned: int | None, flow_active: bool, paused: bool) -> str:
    in_flight = sum(counts[t.value] for t in ACTIVE_TYPES)
    if flow_active or in_flight:
        return "paused" if paused else "running"
    if planned is not None and counts["COMPLETED"] >= planned:
        return "done"
    return "incomplete"


async def plan_variables(client) -> list:
    """Every `evalq_plan_*` variable, page by page."""
    from prefect.client.schemas.objects import Variable

    found, offset = [], 0
    while True:
        body = {"variables": {"name": {"like_": PLAN_VARIABLE_PREFIX}}, "limit": PAGE, "offset": offset}
        page = Variable.model_validate_list((await client.request("POST", "/variables/filter", json=body)).json())
        found += [v for v in page if campaign_of_plan_variable(v.name) is not None]
        if len(page) < PAGE:
            return found
        offset += PAGE


async def list_campaigns(client) -> list[CampaignSummary]:
    """Campaigns with a plan variable: 2 calls, then one count query per campaign (and a
pause check per running one)."""
    from flows.campaign import CampaignPlan

    variables = await plan_variables(client)
    active = {run.campaign for run in await campaign_flow_runs(client, active_only=True)}
    summaries = []
    for variable in variables:
        plan = CampaignPlan.read(variable.value)
        name = plan.name or campaign_of_plan_variable(variable.name) or variable.name
        counts = await state_counts(client, [EPISODE_TAG, campaign_tag(name)])
        paused = await client.read_variable_by_name(pause_variable(name)) if name in active else None
        planned = plan.total
        summaries.append(CampaignSummary(
            name=name, planned=planned, runs=sum(counts.values()), completed=counts["COMPLETED"],
            failed_attempts=counts["FAILED"] + counts["CRASHED"], cancelled=counts["CANCELLED"],
            in_flight=sum(counts[t.value] for t in ACTIVE_TYPES),
            state=campaign_state(counts, planned, name in active, paused is not None and paused.value in (True, "true")),
            updated=variable.updated,
        ))
    return sorted(summaries, key=lambda s: s.updated or dt.datetime.min.replace(tzinfo=dt.timezone.utc), reverse=True)


# -- status: why episodes wait ---------------------------------------------------------------
class CampaignStatus(BaseModel):
    campaign: str
    in_flight: int
    by_state: dict[str, int]
    """Episodes in flight by state name."""
    quarantined: dict[str, str]
    """Quarantined server -> why and until when."""
    not_playing: int
    """Episodes in flight that do not play (those asked about)."""
    explanations: list[WaitExplanation]
    """Why each of them does not (at most `most`, waiting ones first)."""


def run_candidates(run) -> list[str]:
    """The server addresses an episode run may use, from its `job` and `resources` parameters."""
    from flows.slots import candidates
    from generate.models import Job, Resources

    parameters = run.parameters or {}
    try:
        job, resources = Job.model_validate(parameters["job"]), Resources.model_validate(parameters["resources"])
    except (KeyError, ValueError):
        return []
    return list(dict.fromkeys(c.server.address for c in candidates(job, resources)))


async def active_episode_runs(client, campaign: str) -> list:
    """The campaign's episode runs that have not ended, page by page."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = FlowRunFilter(tags=FlowRunFilterTags(all_=[EPISODE_TAG, campaign_tag(campaign)]),
                               state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE_TYPES)))
    runs, offset = [], 0
    while True:
        page = await client.read_flow_runs(flow_run_filter=run_filter, sort=FlowRunSort.START_TIME_ASC, limit=PAGE, offset=offset)
        runs += page
        if len(page) < PAGE:
            return runs
        offset += PAGE


async def server_views(client, addresses: set[str]) -> tuple[dict, dict[str, str]]:
    """`ServerView`s of `addresses` (one limits read, a variables read if some server is
    quarantined, an events read per busy server), and every quarantined server's note."""
    import time

    from flows.naming import address_of_limit
    from flows.pools import holders_of, quarantine_of, read_limits
    from flows.quarantine import quarantine_note
    from flows.waiting import ServerView

    every = await read_limits(client)
    now = time.time()
    notes = {address: quarantine_note(record, now) for address, record in (await quarantine_of(client, every)).items()}
    limits = {address: value for name, value in every.items() if (address := address_of_limit(name))}
    views = {}
    for address in sorted(addresses & set(limits)):
        limit, busy = limits[address]
        holders = [h.job_id for h in await holders_of(client, address, busy)] if busy else []
        capacity = limit if limit else max(busy, 1)
        views[address] = ServerView(address=address, capacity=capacity, busy=busy, holders=holders, quarantine=notes.get(address))
    return views, notes


def waiter_of(run):
    from flows.naming import job_id_of_run_name
    from flows.waiting import Waiter

    return Waiter(run_id=str(run.id), job_id=job_id_of_run_name(run.name), servers=run_candidates(run),
                  since=run.state.timestamp if run.state else None)


async def campaign_status(client, campaign: str, run_ids: set[str] | None = None, job_ids: set[str] | None = None,
                          most: int = 20) -> CampaignStatus:
    """Why the campaign's episodes in flight that are not playing are not (or those of
    `run_ids` / `job_ids`): waiting ones first, then loading, then not started."""
    from flows.naming import RUNNING_STATE, WAITING_STATE, job_id_of_run_name
    from flows.waiting import explain

    runs = await active_episode_runs(client, campaign)
    by_state = Counter((run.state.name if run.state else "?") for run in runs)
    waiting = [run for run in runs if run.state and run.state.type == StateType.RUNNING and run.state.name == WAITING_STATE]
    waiters = [waiter_of(run) for run in waiting]
    order = {WAITING_STATE: 0}
    chosen = [run for run in runs if (run_ids is None or str(run.id) in run_ids) and (job_ids is None or job_id_of_run_name(run.name) in job_ids)
              and not (run.state and run.state.type == StateType.RUNNING and run.state.name == RUNNING_STATE)]
    not_playing = len(chosen)
    chosen = sorted(chosen, key=lambda run: order.get(run.state.name if run.state else "", 1))[:most]
    candidates = {str(run.id): run_candidates(run) for run in chosen}
    views, notes = await server_views(client, {a for addresses in candidates.values() for a in addresses})
    explanations = []
    for run in chosen:
        state = run.state
        explanation = explain(str(run.id), job_id_of_run_name(run.name), state.type.value if state else "SCHEDULED",
                              state.name if state else "", candidates[str(run.id)], views, waiters,
                              since=state.timestamp if state else None)
        if explanation is not None:
            explanations.append(explanation)
    return CampaignStatus(campaign=campaign, in_flight=len(runs), by_state=dict(sorted(by_state.items())),
                          quarantined=notes, not_playing=not_playing, explanations=explanations)


def status_text(status: CampaignStatus) -> str:
    """The status as plain text for a terminal."""
    states = ", ".join(f"{n} {name}" for name, n in status.by_state.items()) or "none"
    lines = [f"Campaign {status.campaign}: {status.in_flight} episodes in flight ({states})"]
    if status.quarantined:
        lines += ["", "Quarantined servers (no new leases until a probe finds them back):"]
        lines += [f"  {address}: {note}" for address, note in sorted(status.quarantined.items())]
    if status.explanations:
        more = f" (first {len(status.explanations)} of {status.not_playing})" if status.not_playing > len(status.explanations) else ""
        lines += ["", f"Why episodes are not playing{more}:"]
        for explanation in status.explanations:
            lines += ["  " + line for line in explanation.lines()]
    return "\n".join(lines) + "\n"
