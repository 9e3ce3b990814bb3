"""Claiming a scheduled run, and handing it back: at every moment one runner holds a run, or none.

A claim is an unforced Pending proposal whose message names the runner and a fresh token
(`flows.naming.claim_message`); the server lets exactly one claimer have the run. What makes a
claim safe when the runner stops while it is on the wire (SIGTERM, `scancel`, a pilot's time
limit, measured: the server commits Pending in 7 of 7 cancels 1-20 ms into the request):
- the proposal is shielded from cancellation (bounded by `CLAIM_SECONDS`), so the runner
  always learns the outcome, and a stop lands just after it: the caller hands back what it won;
- an unclear outcome (the answer lost, a timeout) is settled by reading the run back (ours if
  and only if it is Pending with our token), never by proposing again: a new proposal has a new
  transition id, the server aborts it, and the run would stay Pending under us, never run.
  The client's own retries are safe (same transition id: the server answers with our Pending).
- no answer within `CLAIM_SECONDS` (the API went away with the proposal on the wire) is not a
  "no": the server may grant it as it comes back, and a run Pending under a live runner that
  does not play it is seen by nothing else. So the runner reads the run back once the API
  answers (`settle_late`, outside the shield: a stop may cut it, then the runner is gone and the
  campaign's safety net hands the run back); a run still Scheduled is read once more
  `LATE_ANSWER_SECONDS` later, in case the proposal was still on its way.

Handing back is an unforced Scheduled proposal (no attempt is charged; any runner of the pool
takes it again). If a user cancelled the run meanwhile it ends Cancelled instead; a final run is
left alone. If the API stays away, the run stays Pending under a runner that is gone, which the
campaign's safety net hands back (`flows/campaign/orphans.py`).
"""

from __future__ import annotations

import logging
import os
import uuid

import anyio
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Pending, Scheduled

from flows.naming import claim_message, claim_of_message, handed_back_message
from flows.runtime.api_retry import is_transient, retrying

CLAIM_SECONDS = 10.0
"""The longest a claim may hold up a stop: its proposal, then reading the run back."""
READ_BACK_TRIES = 5
LATE_ANSWER_SECONDS = 5.0
"""After a claim without an answer, how long a run still Scheduled is given before it reads as not ours."""
CLAIM_PAUSE_ENV = "EVALQ_TEST_CLAIM_PAUSE"
"""Tests only: seconds a runner sleeps after the server granted a claim, inside the shielded part,
so a stop reliably lands between claim and start (the race a `scancel` hits by chance)."""

log = logging.getLogger("evalq.runner")


async def claim(client, flow_run: FlowRun, runner: str) -> bool:
    """Propose Pending for `runner`; True when the server gave it the run (then `flow_run.state`
    is the claim, which the engine starts from). A stop cannot interrupt it: it lands after."""
    token = uuid.uuid4().hex[:12]
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(CLAIM_SECONDS):
            won = await _propose(client, flow_run, claim_message(runner, token))
            if won is None:
                won = await _read_back(client, flow_run, token)
            if won and (pause := float(os.environ.get(CLAIM_PAUSE_ENV) or 0)):
                await anyio.sleep(pause)
            return bool(won)
    log.debug("Claim of flow run %s got no answer within %.0f s: reading it back", flow_run.id, CLAIM_SECONDS)
    return await settle_late(client, flow_run, token)


async def settle_late(client, flow_run: FlowRun, token: str) -> bool:
    """Whether a claim that got no answer was granted after all, read back once the API answers."""
    for pause in (0.0, LATE_ANSWER_SECONDS):
        await anyio.sleep(pause)
        try:
            current = await retrying(lambda: client.read_flow_run(flow_run.id))
        except ObjectNotFound:
            return False
        except Exception as exc:
            log.warning("Claim of flow run %s got no answer, nor a read of the run (%s): left to the campaign", flow_run.id, exc)
            return False
        if _is_ours(current.state, token):
            _keep(flow_run, current.state)
            return True
        if current.state is None or current.state.type != StateType.SCHEDULED:
            return False  # another runner's, or settled: a late proposal of ours is refused from there
    return False


async def _propose(client, flow_run: FlowRun, message: str) -> bool | None:
    """True: ours; False: someone else's, or gone; None: unclear (read it back)."""
    from prefect.client.schemas.responses import SetStateStatus

    try:
        result = await client.set_flow_run_state(flow_run.id, Pending(message=message))
    except ObjectNotFound:
        return False
    except Exception as exc:
        if not is_transient(exc):
            log.warning("Could not claim flow run %s: %s", flow_run.id, exc)
        return None
    if result.status == SetStateStatus.ABORT:
        return False
    state = result.state
    if state is not None and state.is_pending() and state.message == message:  # accepted, or our own replay
        _keep(flow_run, state)
        return True
    return False if result.status != SetStateStatus.WAIT else None


async def _read_back(client, flow_run: FlowRun, token: str) -> bool:
    """Whether the run is Pending with our token, read from the server (tries a few times)."""
    for attempt in range(READ_BACK_TRIES):
        try:
            current = await client.read_flow_run(flow_run.id)
        except ObjectNotFound:
            return False
        except Exception as exc:
            if not is_transient(exc) or attempt == READ_BACK_TRIES - 1:
                log.warning("Could not read flow run %s back after claiming it: %s", flow_run.id, exc)
                return False
            await anyio.sleep(0.2 * 2**attempt)
            continue
        ours = _is_ours(current.state, token)
        if ours:
            _keep(flow_run, current.state)
        return ours
    return False


def _is_ours(state, token: str) -> bool:
    return state is not None and state.is_pending() and (claim_of_message(state.message) or ("", None))[1] == token


def _keep(flow_run: FlowRun, state) -> None:
    """The engine starts from this copy of the run (`ClaimedRuns`): keep it current."""
    flow_run.state, flow_run.state_name, flow_run.state_type = state, state.name, state.type


async def hand_back(client, flow_run: FlowRun, runner: str, why: str) -> None:
    """Give a claimed, unstarted run back (Scheduled, unforced); Cancelled if a user cancelled it
    meanwhile. Never raises: a run left Pending is the campaign's safety net's to hand back."""
    try:
        result = await client.set_flow_run_state(flow_run.id, Scheduled(message=handed_back_message(runner, why)))
        state = result.state
        if state is not None and state.type == StateType.CANCELLING:
            await client.set_flow_run_state(flow_run.id, Cancelled(message=f"cancelled before runner {runner} started it"))
    except ObjectNotFound:
        pass
    except Exception as exc:
        log.warning("Could not hand flow run %s back (%s): the campaign will", flow_run.id, exc)
