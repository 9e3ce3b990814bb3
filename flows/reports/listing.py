"""`evalq campaign list`: every campaign the Prefect server knows, with its runs counted by state."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from pydantic import BaseModel

from flows.campaign.history import PAGE
from flows.campaign.plan import CampaignPlan
from flows.naming import (
    EPISODE_TAG,
    PLAN_VARIABLE_PREFIX,
    campaign_of_plan_variable,
    campaign_plan_variable,
    campaign_tag,
    pause_variable,
)
from flows.reports.runs import ACTIVE_TYPES, campaign_flow_runs


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


async def campaign_known(client, name: str) -> bool:
    """Whether this server holds campaign `name`: its plan variable, or an episode run of it."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    if await client.read_variable_by_name(campaign_plan_variable(name)) is not None:
        return True
    runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[EPISODE_TAG, campaign_tag(name)])),
                                       limit=1)
    return bool(runs)
