"""The `campaign` flow: load the inputs, apply the pools, publish the plan, run the loop
(`flows/campaign/loop.py`), then write the outputs (`flows/campaign/outputs.py`).

Deployments name it `flows.campaign:campaign` (prefect.yaml); the package resolves that name
here when it is asked for.
"""

from __future__ import annotations

import time

from prefect import flow, get_client

from flows.campaign.inputs import load_campaign_inputs
from flows.campaign.loop import CampaignLoop
from flows.campaign.outputs import finish_report
from flows.campaign.plan import planned_rows, publish_plan
from flows.campaign.selection import select_jobs
from flows.campaign.settings import CampaignSettings
from flows.cloudlogging.attach import attach_cloud_logging
from flows.naming import CAMPAIGN_FLOW, EPISODE_DEPLOYMENT
from flows.runtime.outages import handle_api_outages
from flows.slots.leaser import EPISODE_LEASE_SECONDS, SAFETY_POLL_SECONDS
from flows.slots.pools import apply_pools


@flow(name=CAMPAIGN_FLOW, persist_result=False)
async def campaign(
    jobs_file: str,
    resources_file: str,
    results_dir: str = "results",
    name: str = "campaign",
    evaluator: str = "sim",
    evaluator_options: dict | None = None,
    prefetch: int = 1,
    max_prefetch: int = 3,
    max_in_flight: int | None = None,
    resume_at: int | None = None,
    resume_below: int | None = None,
    submit_interval: float = 0.0,
    max_attempts: int = 3,
    deployment: str = EPISODE_DEPLOYMENT,
    stats_interval: float = 60.0,
    tick_seconds: float = 0.5,
    lease_seconds: float = EPISODE_LEASE_SECONDS,
    poll_seconds: float = SAFETY_POLL_SECONDS,
    timeout_seconds: float = 3600.0,
    only: list[str] | None = None,
    server_wait_seconds: float | None = None,
    paused: bool = False,
) -> dict:
    """Evaluate every job once, keeping policy servers busy and never overloaded."""
    settings = CampaignSettings.model_validate({**locals(), "evaluator_options": evaluator_options or {}})
    handle_api_outages()
    attach_cloud_logging(campaign=name)
    jobs, resources = load_campaign_inputs(jobs_file, resources_file)
    settings.planned = len(jobs)  # the plan stays whole when --only runs a part of it
    plan = planned_rows(jobs)
    if only is not None:
        jobs = select_jobs(jobs, only)
    started = time.time()
    async with get_client() as client:
        await apply_pools(client, resources)
        await publish_plan(client, name, plan)
        loop = CampaignLoop(jobs, resources, settings, client)
        tally = await loop.run()
        if (early := loop.ended_early()) is not None:
            return early
        return await finish_report(client, tally, jobs, resources, settings, time.time() - started)
