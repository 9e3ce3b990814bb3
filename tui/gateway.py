"""The Prefect API as evaltui reads it: one client, raw reads and pages, the campaign's plan.

`Gateway` owns the client (reused across refreshes) and the campaign being watched; the
concern modules (`tui.queue`, `tui.pools`, `tui.logs`, `tui.detail`, `tui.actions`) read
through it and never build a client of their own. Nothing here touches widgets.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, AsyncIterator
from uuid import UUID

from flows import naming
from tui.cache import Cached
from tui.models import EpisodeRow

PAGE = 200
"""Prefect's largest page of flow runs."""
PLAN_SECONDS = 30.0
"""How long the campaign's plan (variable and artifact) is reused before it is read again."""


def api_url() -> str:
    """`PREFECT_API_URL`, or a local server's default address when unset."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or "http://127.0.0.1:4200/api"


def ui_url() -> str:
    return (os.environ.get("PREFECT_UI_URL") or api_url().removesuffix("/api")).rstrip("/")


def flow_run_url(flow_run_id: UUID | str) -> str:
    """The episode's page in the Prefect UI."""
    return f"{ui_url()}/runs/flow-run/{flow_run_id}"


def run_filter(
    tags: list[str],
    types: list[str] | None = None,
    names: list[str] | None = None,
    ids: list[UUID] | None = None,
    like: str | None = None,
    expected_after: datetime | None = None,
    start_time_after: datetime | None = None,
    end_time_after: datetime | None = None,
):
    """A `FlowRunFilter` with only the given criteria set (Prefect sends unset fields as absent)."""
    from prefect.client.schemas import filters as f

    kwargs: dict[str, Any] = {"tags": f.FlowRunFilterTags(all_=tags)}
    if expected_after:
        kwargs["expected_start_time"] = f.FlowRunFilterExpectedStartTime(after_=expected_after)
    if start_time_after:
        kwargs["start_time"] = f.FlowRunFilterStartTime(after_=start_time_after)
    if end_time_after:
        kwargs["end_time"] = f.FlowRunFilterEndTime(after_=end_time_after)
    if types or names:
        state: dict[str, Any] = {}
        if types:
            state["type"] = f.FlowRunFilterStateType(any_=types)
        if names:
            state["name"] = f.FlowRunFilterStateName(any_=names)
        kwargs["state"] = f.FlowRunFilterState(**state)
    if ids:
        kwargs["id"] = f.FlowRunFilterId(any_=ids)
    if like:
        kwargs["name"] = f.FlowRunFilterName(like_=like)
    return f.FlowRunFilter(**kwargs)


def run_tag(run, key: str) -> str:
    """A run's `key:value` tag value, "" when absent."""
    return naming.tag_value(run.tags, key) or ""


def episode_row(run) -> EpisodeRow:
    """A Prefect `FlowRun` as a table row."""
    state = run.state
    return EpisodeRow(
        id=run.id,
        name=run.name,
        team=run_tag(run, "team"),
        task=run_tag(run, "task"),
        state_type=state.type.value if state else "UNKNOWN",
        state_name=state.name if state else "",
        attempt=naming.attempt_of(run.tags),
        pool=run_tag(run, "pool"),
        start_time=run.start_time,
        end_time=run.end_time,
        job_id=naming.job_id_of_run_name(run.name),
    )


class Gateway:
    """The client, and the reads every panel shares, for one campaign (or the latest one)."""

    def __init__(self, campaign: str | None = None):
        self.campaign = campaign
        self._client = None
        self._plan = Cached(PLAN_SECONDS)
        """The plan variable and the per-(team, task) plan: they change only when a campaign (re)starts."""

    def forget_plan(self) -> None:
        self._plan = Cached(PLAN_SECONDS)

    async def client(self):
        if self._client is None:
            from prefect.client.orchestration import PrefectClient
            from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

            client = PrefectClient(
                api_url(),
                auth_string=os.environ.get("PREFECT_API_AUTH_STRING") or PREFECT_API_AUTH_STRING.value(),
                api_key=os.environ.get("PREFECT_API_KEY") or PREFECT_API_KEY.value(),
                httpx_settings={"timeout": 15.0},
            )
            await client.__aenter__()
            self._client = client
        return self._client

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)

    def tags(self, *extra: str) -> list[str]:
        return [naming.EPISODE_TAG, naming.campaign_tag(self.campaign or ""), *extra]

    async def count(self, *extra: str, types: list[str] | None = None, names: list[str] | None = None) -> int:
        client = await self.client()
        return await client.count_flow_runs(flow_run_filter=run_filter(self.tags(*extra), types, names))

    async def read_runs(self, flow_run_filter, limit: int, offset: int = 0, sort: str = "NAME_ASC"):
        from prefect.client.schemas.sorting import FlowRunSort

        client = await self.client()
        return await client.read_flow_runs(flow_run_filter=flow_run_filter, limit=limit, offset=offset, sort=FlowRunSort[sort])

    async def run_pages(self, flow_run_filter, most: int | None = None) -> AsyncIterator[list]:
        """Every run matching the filter, a page (`PAGE` runs, by id) at a time; at most `most` runs."""
        offset = 0
        while most is None or offset < most:
            runs = await self.read_runs(flow_run_filter, limit=PAGE, offset=offset, sort="ID_DESC")
            yield runs
            if len(runs) < PAGE:
                return
            offset += PAGE

    async def variable(self, name: str) -> Any:
        client = await self.client()
        variable = await client.read_variable_by_name(name)
        return None if variable is None else variable.value

    async def events(self, body: dict, limit: int = 50) -> list[dict]:
        """One page (at most 50, the server's cap) of events matching `body`, an `EventFilter`."""
        client = await self.client()
        response = await client.request("POST", "/events/filter", json={"filter": body, "limit": min(limit, 50)})
        return response.json().get("events", [])

    # -- campaigns --------------------------------------------------------------
    async def campaigns(self) -> list[str]:
        """Campaigns with recent episodes, most recent first."""
        runs = await self.read_runs(run_filter([naming.EPISODE_TAG]), limit=200, sort="EXPECTED_START_TIME_DESC")
        seen: dict[str, None] = {}
        for run in runs:
            name = naming.tag_value(run.tags, "campaign")
            if name:
                seen.setdefault(name, None)
        return list(seen)

    async def ensure_campaign(self) -> str | None:
        """The campaign to show: the one asked for, else the most recent one."""
        if self.campaign is None:
            found = await self.campaigns()
            if found:
                self.campaign = found[0]
        return self.campaign

    async def plan(self):
        """The campaign's plan variable (`flows.campaign.CampaignPlan`), reused for `PLAN_SECONDS`;
        empty without a campaign or a plan."""
        from flows.campaign.plan import CampaignPlan

        campaign = self.campaign
        if not campaign:
            return CampaignPlan.read(None)
        return CampaignPlan.read(
            await self._plan.get("variable", lambda: self.variable(naming.campaign_plan_variable(campaign))))

    async def plan_rows(self) -> dict[tuple[str, str], int] | None:
        """Planned episodes per (team, task) (`flows/campaign/plan.py`), reused for `PLAN_SECONDS`."""
        from flows.campaign.plan import read_plan

        client, campaign = await self.client(), self.campaign
        return await self._plan.get("rows", lambda: read_plan(client, campaign))
