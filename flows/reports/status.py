"""`evalq campaign status`: the episodes of a campaign in flight by state, and why those not
playing wait (the pure reasoning is `flows/slots/waiting.py`)."""

from __future__ import annotations

from collections import Counter

from prefect.client.schemas.objects import StateType
from pydantic import BaseModel

from flows.reports.runs import ACTIVE_TYPES
from flows.runtime.liveness import PoolService
from flows.slots.waiting import WaitExplanation


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
    pools: list[PoolService] = []
    """The work pools of its episodes in flight: whether a live worker or runner polls each."""


def run_candidates(run) -> list[str]:
    """The server addresses an episode run may use, from its `job` and `resources` parameters."""
    from flows.slots.steering import candidates
    from generate.models import Job, Resources

    parameters = run.parameters or {}
    try:
        job, resources = Job.model_validate(parameters["job"]), Resources.model_validate(parameters["resources"])
    except (KeyError, ValueError):
        return []
    return list(dict.fromkeys(c.server.address for c in candidates(job, resources)))


async def active_episode_runs(client, campaign: str) -> list:
    """The campaign's episode runs that have not ended, page by page."""
    from flows.campaign.history import read_campaign_runs

    return await read_campaign_runs(client, campaign, "START_TIME_ASC", state={"type": {"any_": [t.value for t in ACTIVE_TYPES]}})


async def server_views(client, addresses: set[str]) -> tuple[dict, dict[str, str]]:
    """`ServerView`s of `addresses` (one limits read, a variables read if some server is
    quarantined, an events read per busy server), and every quarantined server's note."""
    import time

    from flows.naming import address_of_limit
    from flows.slots.pools import holders_of, quarantine_of, read_limits
    from flows.slots.quarantine_policy import quarantine_note
    from flows.slots.waiting import ServerView

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
    from flows.slots.waiting import Waiter

    return Waiter(run_id=str(run.id), job_id=job_id_of_run_name(run.name), servers=run_candidates(run),
                  since=run.state.timestamp if run.state else None)


async def campaign_status(client, campaign: str, run_ids: set[str] | None = None, job_ids: set[str] | None = None,
                          most: int = 20) -> CampaignStatus:
    """Why the campaign's episodes in flight that are not playing are not (or those of
    `run_ids` / `job_ids`): waiting ones first, then loading, then not started."""
    from flows.naming import RUNNING_STATE, WAITING_STATE, job_id_of_run_name
    from flows.slots.waiting import explain

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
    services = await pool_services(client, runs)
    explanations = []
    for run in chosen:
        state = run.state
        explanation = explain(str(run.id), job_id_of_run_name(run.name), state.type.value if state else "SCHEDULED",
                              state.name if state else "", candidates[str(run.id)], views, waiters,
                              since=state.timestamp if state else None, message=state.message if state else None,
                              service=services.get(run.work_pool_name))
        if explanation is not None:
            explanations.append(explanation)
    return CampaignStatus(campaign=campaign, in_flight=len(runs), by_state=dict(sorted(by_state.items())),
                          quarantined=notes, not_playing=not_playing, explanations=explanations,
                          pools=list(services.values()))


async def pool_services(client, runs) -> dict[str, PoolService]:
    """Who serves each work pool of `runs` (two or three calls a pool)."""
    from flows.runtime.liveness import read_pool_service

    queues = {run.work_pool_name: run.work_queue_name for run in runs if run.work_pool_name}
    return {pool: await read_pool_service(client, pool, queue) for pool, queue in sorted(queues.items())}


def status_text(status: CampaignStatus) -> str:
    """The status as plain text for a terminal."""
    states = ", ".join(f"{n} {name}" for name, n in status.by_state.items()) or "none"
    lines = [f"Campaign {status.campaign}: {status.in_flight} episodes in flight ({states})"]
    lines += [("  " if service.served else "  WARNING ") + service.note() for service in status.pools]
    if status.quarantined:
        lines += ["", "Quarantined servers (no new leases until a probe finds them back):"]
        lines += [f"  {address}: {note}" for address, note in sorted(status.quarantined.items())]
    if status.explanations:
        more = f" (first {len(status.explanations)} of {status.not_playing})" if status.not_playing > len(status.explanations) else ""
        lines += ["", f"Why episodes are not playing{more}:"]
        for explanation in status.explanations:
            lines += ["  " + line for line in explanation.lines()]
    return "\n".join(lines) + "\n"
