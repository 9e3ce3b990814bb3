"""`evalq campaign purge` and `evalq batch purge`: delete a settled campaign's (or batch's) runs,
variables and artifacts from the Prefect server (never its results)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Collection

from prefect.client.schemas.objects import StateType
from pydantic import BaseModel

from flows.campaign.history import read_episode_records
from flows.naming import (
    BATCH_PURGE_TAG,
    artifact_key,
    campaign_plan_variable,
    campaign_tag,
    leaderboard_artifact_key,
    pause_variable,
    plan_artifact_key,
)
from flows.reports.runs import EVENTS_PAGE, batches, campaign_flow_runs


# -- purge -----------------------------------------------------------------------------------
class PurgeResult(BaseModel):
    campaign: str
    dry_run: bool
    episode_runs: dict[str, int]
    """Deleted episode runs by state name."""
    campaign_runs: int
    kept_runs: int
    """Runs left: not finished, or newer than `--older-than`."""
    purge_runs: int = 0
    """A batch's own `batch-purge` runs (`--keep-for`): finished ones, and once nothing else is
    left the one scheduled."""
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
    client, campaign: str, older_than: dt.timedelta | None = None, dry_run: bool = False, force: bool = False,
    spare: Collection[str] = (),
) -> PurgeResult:
    """Delete the campaign's finished flow runs (but those in `spare`: ids a running loop has not
    settled yet), and once none is left its variables and artifacts. Never touches metrics or
    results files."""
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
    episodes = [r for r in records if purgeable(r.end_time or r.created, r.final, cutoff) and r.run_id not in spare]
    campaigns = [r for r in flow_runs if purgeable(r.end_time, r.final, cutoff)]
    kept = len(records) + len(flow_runs) - len(episodes) - len(campaigns)
    chores = await purge_runs_of(client, campaign)
    chores_gone = [str(run.id) for run in chores if run.state is not None
                   and (run.state.is_final() or (kept == 0 and run.state.type == StateType.SCHEDULED))]
    variables, artifacts = [], []
    if kept == 0:
        from flows.campaign.rerun_requests import pending_requests

        variables = [campaign_plan_variable(campaign), pause_variable(campaign)]
        variables += [name for name, _ in await pending_requests(client, campaign)]  # retry requests left
        artifacts = [artifact_key(campaign), leaderboard_artifact_key(campaign), plan_artifact_key(campaign)]
    if not dry_run:
        await delete_flow_runs(client, [r.run_id for r in episodes] + [r.id for r in campaigns] + chores_gone)
        variables = [name for name in variables if await delete_variable(client, name)]
        artifacts = [key for key in artifacts if await delete_artifacts(client, key)]
    return PurgeResult(
        campaign=campaign, dry_run=dry_run, episode_runs=dict(sorted(Counter(r.state_name for r in episodes).items())),
        campaign_runs=len(campaigns), kept_runs=kept, variables=variables, artifacts=artifacts, purge_runs=len(chores_gone),
    )


async def purge_runs_of(client, campaign: str) -> list:
    """A batch's `batch-purge` runs (`flows/batch/keep.py`), by their tags."""
    from prefect.client.schemas.filters import FlowRunFilter

    run_filter = FlowRunFilter.model_validate({"tags": {"all_": [BATCH_PURGE_TAG, campaign_tag(campaign)]}})
    return await client.read_flow_runs(flow_run_filter=run_filter)


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
