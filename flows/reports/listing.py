"""`evalq campaign list`: every campaign the Prefect server knows, its jobs counted by state."""

from __future__ import annotations

import datetime as dt

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
from flows.reports.jobs import JobCounts, count_jobs
from flows.reports.runs import campaign_flow_runs


# -- list ------------------------------------------------------------------------------------
class CampaignSummary(BaseModel):
    """One campaign: its jobs by their latest run (flows/reports/jobs.py), attempts apart."""

    name: str
    planned: int | None
    done: int
    failed: int
    cancelled: int
    in_flight: int
    waiting: int | None
    """Planned jobs not dispatched yet."""
    attempts: int
    retries: int
    runs: int
    """Episode flow runs."""
    state: str
    """running | paused | done | incomplete."""
    updated: dt.datetime | None


def campaign_state(jobs: JobCounts, flow_active: bool, paused: bool) -> str:
    if flow_active or jobs.in_flight:
        return "paused" if paused and flow_active else "running"
    if jobs.planned is not None and jobs.done >= jobs.planned:
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
    """Campaigns with a plan variable: 2 calls, then a few queries per campaign (`count_jobs`)
    and a pause check per running one."""
    variables = await plan_variables(client)
    active = {run.campaign for run in await campaign_flow_runs(client, active_only=True)}
    summaries = []
    for variable in variables:
        plan = CampaignPlan.read(variable.value)
        name = plan.name or campaign_of_plan_variable(variable.name) or variable.name
        jobs = await count_jobs(client, name, plan.total)
        paused = await client.read_variable_by_name(pause_variable(name)) if name in active else None
        summaries.append(CampaignSummary(
            name=name, planned=plan.total, done=jobs.done, failed=jobs.failed, cancelled=jobs.cancelled,
            in_flight=jobs.in_flight, waiting=jobs.waiting, attempts=jobs.attempts, retries=jobs.retries, runs=jobs.runs,
            state=campaign_state(jobs, name in active, paused is not None and paused.value in (True, "true")),
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
