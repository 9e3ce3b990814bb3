"""A campaign's planned episodes per (team, task), published for `evaltui` and the Prefect UI.

The plan variable (`naming.campaign_plan_variable`) holds the total and the pools, but Prefect
caps a variable at 5,000 characters: a campaign of 100 teams x 20 tasks needs ~40,000. The
per-(team, task) counts therefore go into a table artifact (key `evalq-<campaign>-plan`):
no size cap, one read by key (`GET /artifacts/{key}/latest`), shown as a table in the
Prefect UI, and a campaign run again publishes a new version that supersedes the old one.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from generate.models import Job

PlanRows = dict[tuple[str, str], int]
"""(team slug, task) -> planned episodes."""


def planned_rows(jobs: Iterable[Job]) -> PlanRows:
    """Every job counts once, whether or not it was dispatched or is already done."""
    return dict(Counter((job.payload.team_slug, job.payload.task) for job in jobs))


def plan_artifact_key(campaign: str) -> str:
    from flows.report import artifact_key

    return f"{artifact_key(campaign)}-plan"


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
