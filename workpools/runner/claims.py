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
  "no": the server may grant it as it comes back, or later still (the request held up in a
  database outage), and a run Pending under a live runner that does not play it is seen by
  nothing else. The runner keeps such claims (`UnansweredClaims`) and reads each back at every
  pick-up round until it is settled: granted after all, it is handed back (any runner takes it
  again, with a claim that was answered); still Scheduled, it is kept (the proposal may still
  land); anything else, forgotten. A stopping runner settles them one last time, shielded.

Handing back is an unforced Scheduled proposal (no attempt is charged; any runner of the pool
takes it again). If a user cancelled the run meanwhile it ends Cancelled instead; a final run is
left alone. If the API stays away, the run stays Pending under a runner that is gone, which the
campaign's safety net hands back (`flows/campaign/orphans.py`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from uuid import UUID

import anyio
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Pending, Scheduled

from flows.naming import claim_message, claim_of_message, handed_back_message
from flows.runtime.api_retry import is_transient, without_client_retries

CLAIM_SECONDS = 10.0
"""The longest a claim may hold up a stop: its proposal, then reading the run back."""
READ_BACK_TRIES = 5
UNANSWERED_KEEP_SECONDS = 600.0
"""How long a claim without an answer is read back while its run stays Scheduled (the pick-up
takes a Scheduled run again within seconds; this only bounds the bookkeeping)."""
CLAIM_PAUSE_ENV = "EVALQ_TEST_CLAIM_PAUSE"
"""Tests only: seconds a runner sleeps after the server granted a claim, inside the shielded part,
so a stop reliably lands between claim and start (the race a `scancel` hits by chance)."""

log = logging.getLogger("evalq.runner")


async def claim(client, flow_run: FlowRun, runner: str, unanswered: "UnansweredClaims | None" = None) -> bool:
    """Propose Pending for `runner`; True when the server gave it the run (then `flow_run.state`
    is the claim, which the engine starts from). A stop cannot interrupt it: it lands after.
    No answer in time: False, and the claim goes to `unanswered` to be read back later."""
    token = uuid.uuid4().hex[:12]
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(CLAIM_SECONDS):
            won = await _propose(client, flow_run, claim_message(runner, token))
            if won is None:
                won = await _read_back(client, flow_run, token)
            if won and (pause := float(os.environ.get(CLAIM_PAUSE_ENV) or 0)):
                await anyio.sleep(pause)
            return bool(won)
    log.debug("Claim of flow run %s got no answer within %.0f s: read back later", flow_run.id, CLAIM_SECONDS)
    if unanswered is not None:
        unanswered.add(flow_run, token)
    return False


class UnansweredClaims:
    """Claims that got no answer, read back until settled (the server may grant one late)."""

    def __init__(self) -> None:
        self._open: dict[UUID, tuple[FlowRun, str, float]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, flow_run: FlowRun, token: str) -> None:
        self._open[flow_run.id] = (flow_run, token, time.monotonic())

    async def settle(self, client, runner: str) -> None:
        """Read each back: a claim granted after all is handed back, one still Scheduled is kept
        (for up to `UNANSWERED_KEEP_SECONDS`), any other forgotten. Never raises."""
        for run_id, (flow_run, token, since) in list(self._open.items()):
            try:
                with without_client_retries():  # the API away: the next round asks again
                    current = await client.read_flow_run(run_id)
            except ObjectNotFound:
                del self._open[run_id]
                continue
            except Exception as exc:
                if not is_transient(exc):  # else the API is still away: next round
                    del self._open[run_id]
                    log.warning("Could not read back flow run %s, claimed without an answer: %s", run_id, exc)
                continue
            if _is_ours(current.state, token):
                with anyio.CancelScope(shield=True):  # a stop now must not leave it half handed back
                    await hand_back(client, flow_run, runner, "its claim was granted after it had no answer")
                del self._open[run_id]
            elif current.state is None or current.state.type != StateType.SCHEDULED:
                del self._open[run_id]  # another runner's, or settled: a late proposal of ours is refused from there
            elif time.monotonic() - since > UNANSWERED_KEEP_SECONDS:
                del self._open[run_id]
                log.warning("Claim of flow run %s never answered in %.0f s and the run is still Scheduled: no longer watched",
                            run_id, UNANSWERED_KEEP_SECONDS)

    async def settle_last(self, client, runner: str) -> None:
        """At a stop: `settle` once more, shielded, for at most `CLAIM_SECONDS` (a claim granted
        even later leaves its run Pending under a runner gone: the campaign's to hand back)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLAIM_SECONDS):
            await self.settle(client, runner)


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
