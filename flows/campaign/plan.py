"""A campaign's plan: the plan variable and the planned episodes per (team, task).

The plan variable (`naming.campaign_plan_variable`, `CampaignPlan`) holds the total and the
pools, set when the campaign starts: what evaltui and `evalq campaign list/report` know of a
campaign whose runs are created just in time. Prefect caps a variable at 5,000 characters: a
campaign of 100 teams x 20 tasks needs ~40,000 for its per-(team, task) counts, so these go
into a table artifact (key `naming.plan_artifact_key`): no size cap, one read by key
(`GET /artifacts/{key}/latest`), shown as a table in the Prefect UI, and a campaign run again
publishes a new version that supersedes the old one.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable

from pydantic import BaseModel, ValidationError

from flows.naming import plan_artifact_key
from generate.models import Job, Resources

VARIABLE_LIMIT = 5000
"""Prefect caps a variable's value at 5,000 characters."""


class CampaignPlan(BaseModel):
    """The campaign's plan variable (`naming.campaign_plan_variable`), set when it starts: what
    `evaltui` and `evalq campaign list/report` know of a campaign that runs are created for
    just in time. Prefect caps a variable's value at 5,000 characters: the pools are left out
    when they do not fit."""

    total: int | None = None
    """Jobs planned (the whole plan, also when `--only` runs a part of it)."""
    name: str = ""
    kind: str = "campaign"
    """"campaign" (episodes) or "batch" (items of a batch of pipelines)."""
    pools: dict[str, list[str]] | None = None
    """Pool -> its servers' `host:port` (server limits do not say)."""

    @classmethod
    def read(cls, value: object) -> "CampaignPlan":
        """The plan from a variable's value; empty when absent or not a plan."""
        try:
            return cls.model_validate(value) if isinstance(value, dict) else cls()
        except ValidationError:
            return cls()

    def server_pools(self) -> dict[str, str]:
        """Server `host:port` -> its pool."""
        return {address: pool for pool, addresses in (self.pools or {}).items() for address in addresses}


def plan_value(total: int, resources: Resources, name: str = "") -> dict:
    """What `evaltui` needs to know of the campaign: its size, and which server is in which pool."""
    plan = CampaignPlan(total=total, name=name, pools={pool: [s.address for s in resources.servers(pool)] for pool in resources.pools})
    value = plan.model_dump(mode="json")
    return value if len(json.dumps(value)) < VARIABLE_LIMIT else plan.model_dump(mode="json", exclude={"pools"})


PlanRows = dict[tuple[str, str], int]
"""(team slug, task) -> planned episodes."""


def planned_rows(jobs: Iterable[Job]) -> PlanRows:
    """Every job counts once, whether or not it was dispatched or is already done."""
    return dict(Counter((job.payload.team_slug, job.payload.task) for job in jobs))


def plan_table(rows: PlanRows) -> list[dict]:
    return [{"team": team, "task": task, "planned": n} for (team, task), n in sorted(rows.items())]


def rows_of_table(data: object) -> PlanRows:
    """The artifact's table back as counts; anything malformed is skipped."""
    rows: PlanRows = {}
    for row in data if isinstance(data, list) else []:
        try:
            rows[(str(row["team"]), str(row["task"]))] = int(row["planned"])
        except (TypeError, KeyError, ValueError):
            continue
    return rows


async def publish_plan(client, campaign: str, rows: PlanRows) -> None:
    """The table artifact of planned episodes (a new version of the campaign's plan key)."""
    from prefect.client.schemas.actions import ArtifactCreate

    await client.create_artifact(ArtifactCreate(
        key=plan_artifact_key(campaign), type="table", data=plan_table(rows),
        description=f"Planned episodes of campaign {campaign} per team and task",
    ))


async def read_plan(client, campaign: str) -> PlanRows | None:
    """The latest published plan, or None when the campaign published none."""
    import json

    import httpx

    try:
        response = await client.request("GET", "/artifacts/{key}/latest", path_params={"key": plan_artifact_key(campaign)})
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise
    data = response.json().get("data")
    return rows_of_table(json.loads(data) if isinstance(data, str) else data)
