"""What evaltui asks of Prefect: retry (a request the campaign applies), cancel, pause or resume."""

from __future__ import annotations

from uuid import UUID

from flows import naming
from tui.gateway import Gateway


class ActionRefused(Exception):
    """An action that does not apply to the episode's current state."""


async def retry(gateway: Gateway, flow_run_id: UUID) -> str:
    """Ask the episode's campaign for a new attempt of a failed, crashed or cancelled episode,
    with a fresh budget (`flows/campaign/rerun_requests.py`): a new run the campaign numbers,
    where the Prefect UI's Retry reruns the same one."""
    from flows.campaign.rerun_requests import RetryRequest, request_retry
    from flows.reports.runs import campaign_flow_runs

    client = await gateway.client()
    run = await client.read_flow_run(flow_run_id)
    if run.state is None or run.state.type.value not in ("FAILED", "CRASHED", "CANCELLED"):
        raise ActionRefused(f"{run.name} is {run.state.name if run.state else 'unknown'}: only failed, crashed or cancelled episodes can be retried")
    campaign = naming.tag_value(run.tags, "campaign")
    if not campaign:
        raise ActionRefused(f"{run.name} belongs to no campaign: retry it from the Prefect UI")
    job_id = naming.job_id_of_run_name(run.name)
    await request_retry(client, RetryRequest(campaign=campaign, job_id=job_id, flow_run_id=flow_run_id))
    if await campaign_flow_runs(client, campaign, active_only=True):
        return f"{job_id}: retry requested from campaign {campaign}"
    return f"{job_id}: retry requested; campaign {campaign} is not running, `evalq campaign run --name {campaign}` applies it"


async def cancel(gateway: Gateway, flow_run_id: UUID) -> str:
    """Ask the worker to cancel a running or queued episode (Cancelling)."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    client = await gateway.client()
    run = await client.read_flow_run(flow_run_id)
    if run.state is None or run.state.is_final():
        raise ActionRefused(f"{run.name} is already {run.state.name if run.state else 'finished'}")
    await client.set_flow_run_state(flow_run_id, State(type=StateType.CANCELLING, message="Cancelled from evaltui"), force=True)
    return f"{run.name} cancelling"


async def set_paused(gateway: Gateway, paused: bool) -> str:
    """Pause or resume the campaign's dispatch through its pause variable."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    if await gateway.ensure_campaign() is None:
        raise ActionRefused("no campaign to pause")
    client = await gateway.client()
    name = naming.pause_variable(gateway.campaign)
    if await client.read_variable_by_name(name) is None:
        await client.create_variable(VariableCreate(name=name, value=paused))
    else:
        await client.update_variable(VariableUpdate(name=name, value=paused))
    return f"campaign {gateway.campaign} {'paused' if paused else 'resumed'}"
