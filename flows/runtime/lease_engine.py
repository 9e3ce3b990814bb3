"""One lease engine on Prefect global concurrency limits: take, keep, give back.

A lease holds one slot on each of several limits at once; the server answers all or none
(423 while any of them is full, 422 while one is set to 0: both mean "not now"). It ignores
names it does not know, so the answer is checked (`LimitsMissing`). A held lease is renewed in
the background; the server forgets it when nobody renews it in time (after a SIGKILL of the
holder the slot comes back on its own, see docs/architecture.md).

Two callers, each with a `LeasePolicy`: an episode's slot on a policy server
(`flows/slots/leaser.py`, `EPISODE_SLOT`: a lost lease cancels the episode with `LeaseLost`, since
its server may already serve someone else) and a queued command's GPUs
(`workpools/local/leases.py`, `GPU_LEASE`: the loss is logged and the command keeps running).
Everything else is the same for both:
- taking retries transient API errors (`flows/runtime/api_retry.py`: quickly at first, then
  across an API outage of up to its budget);
- renewal every `renew_seconds` (20 s at most): a 404/410 means the lease is gone at once; any
  other failure is retried until the lease runs out, and then the lease counts as lost (the
  repossessor may have handed the slot to someone else); a lost lease is not renewed again.
  A lease longer than the outage budget plus a renewal interval outlasts any outage the
  callers wait out (`EPISODE_SLOT`);
- release retries transient errors across an outage and never raises (a lease that cannot be
  given back expires by itself); a lease the server no longer knows counts as given back; a
  lost lease is not released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable
from uuid import UUID

import httpx

from flows.runtime.api_retry import is_transient, retrying

MIN_LEASE_SECONDS = 60.0
"""The Prefect server rejects shorter leases."""
RENEW_SECONDS = 20.0
"""The longest time between renewals: a lease is never more than this short of its full length."""
NOT_NOW = (423, 422)
"""Answers to a take that mean "busy now": a full limit (423), a limit set to 0 (422)."""
GIVE_BACK_WAIT_SECONDS = 5.0
"""How long a cancelled take waits for its request's answer (to give back what it granted)
before the cancel goes on; the give-back itself goes on until the request is answered."""
GONE = (404, 410)
"""Answers to a renewal that mean the server no longer knows the lease."""
_late_give_backs: set[asyncio.Future] = set()
"""Give-backs still waiting for their take's answer (kept referenced until done)."""

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The server dropped our lease (expired while unreachable): the slot may be reused."""


class LimitsMissing(Exception):
    """Some of the limits a lease asked for do not exist on the server."""

    def __init__(self, missing: list[str]):
        super().__init__(f"concurrency limits missing on the server: {missing}")
        self.missing = missing


@dataclass(frozen=True)
class LeasePolicy:
    """How one kind of holder leases: how long, how often renewed, what a loss does."""

    lease_seconds: float = MIN_LEASE_SECONDS
    """How long the server keeps a lease nobody renews (it rejects less than 60 s)."""
    renew_seconds: float | None = None
    """Time between renewals; None: a third of the lease (two may fail in a row), at most
    `RENEW_SECONDS`."""
    lost_error: type[Exception] | None = LeaseLost
    """Raised in the holder's block (which is cancelled) when the lease is lost; None: log
    a warning and let the block go on."""
    transient: Callable[[BaseException], bool] = is_transient
    """API errors worth trying again (no connection, a 5xx such as SQLite's 503)."""

    def __post_init__(self) -> None:
        if self.renew_seconds is None:
            object.__setattr__(self, "renew_seconds", min(self.lease_seconds / 3, RENEW_SECONDS))


class Leases:
    """Leases taken through one Prefect client under one policy."""

    def __init__(self, client, policy: LeasePolicy):
        self.client = client
        self.policy = policy

    async def take(self, names: list[str], holder_id: UUID | None = None) -> UUID | None:
        """One non-blocking try for a slot on every limit in `names` at once; the lease id,
        or None when any of them is busy. Raises `LimitsMissing` (having given the lease back)."""
        from prefect.client.schemas.objects import ConcurrencyLeaseHolder

        holder = ConcurrencyLeaseHolder(type="flow_run", id=holder_id) if holder_id else None
        request = asyncio.ensure_future(retrying(lambda: self.client.increment_concurrency_slots_with_lease(
            names=names, slots=1, mode="concurrency", lease_duration=self.policy.lease_seconds, holder=holder,
        ), transient=self.policy.transient))
        try:
            response = await asyncio.shield(request)
        except asyncio.CancelledError:  # the server may grant it all the same: give it back, then stop
            give_back = asyncio.ensure_future(self._give_back_if_granted(request))
            _late_give_backs.add(give_back)
            give_back.add_done_callback(_late_give_backs.discard)
            await asyncio.wait({give_back}, timeout=GIVE_BACK_WAIT_SECONDS)  # then it goes on alone
            raise
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in NOT_NOW:
                return None
            raise
        body = response.json()
        lease_id = UUID(body["lease_id"])
        granted = {limit["name"] for limit in body["limits"]}
        if granted != set(names):
            await self.release(lease_id)
            raise LimitsMissing(sorted(set(names) - granted))
        return lease_id

    async def _give_back_if_granted(self, request: asyncio.Future) -> None:
        """Release the lease `request` (a take cancelled meanwhile) brings, if it brings one."""
        try:
            response = await request
        except Exception:  # noqa: BLE001 - refused or unreachable: nothing was granted
            return
        await self.release(UUID(response.json()["lease_id"]))

    async def release(self, lease_id: UUID, then: Callable[[], None] | None = None) -> bool:
        """Give the lease back (then call `then`); False if it could not be: the API stayed
        away past the outage budget, or answered an error other than "no such lease"."""
        try:
            await retrying(lambda: self.client.release_concurrency_slots_with_lease(lease_id), self.policy.transient)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in GONE:  # gone: expired, or given back already
                logger.warning("could not release lease %s: %s", lease_id, exc)
                return False
        except Exception as exc:
            logger.warning("could not release lease %s: %s", lease_id, exc)
            return False
        if then is not None:
            then()
        return True

    async def renew_forever(self, lease_id: UUID, where: str, on_lost: Callable[[str], Awaitable[None] | None]) -> None:
        """Renew every `renew_seconds` until cancelled, or until the lease is lost: then
        call `on_lost(reason)` once and return. `where` names the lease in the reason."""
        policy = self.policy
        expires = time.monotonic() + policy.lease_seconds
        while True:
            await asyncio.sleep(policy.renew_seconds)
            try:  # transient failures are retried while the lease still runs
                await retrying(lambda: self.client.renew_concurrency_lease(lease_id, lease_duration=policy.lease_seconds),
                               policy.transient, deadline=expires)
                expires = time.monotonic() + policy.lease_seconds
                continue
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code in GONE:
                    await _maybe_await(on_lost(f"lease {lease_id} on {where} is gone"))
                    return
                failure = f"API answered {exc.response.status_code}"
            except httpx.TransportError:
                failure = "API unreachable"
            except Exception as exc:
                failure = f"renewal failed ({type(exc).__name__}: {exc})"
            if time.monotonic() > expires:  # any failure, once the lease has run out, may have lost it
                await _maybe_await(on_lost(f"{failure} past the lease on {where}"))
                return

    @contextlib.asynccontextmanager
    async def holding(self, lease_id: UUID, where: str, released: Callable[[], None] | None = None) -> AsyncIterator[UUID]:
        """Keep the lease renewed while the block runs; release it on every way out (then
        call `released`), unless it was lost. A loss cancels the block and raises the
        policy's `lost_error` instead, or (no `lost_error`) is logged and the block goes on."""
        body = asyncio.current_task()
        lost: list[str] = []
        aborts = self.policy.lost_error is not None

        def on_lost(reason: str) -> None:
            lost.append(reason)
            if aborts:
                body.cancel()
            else:
                logger.warning("%s; carrying on without it", reason)

        renewer = asyncio.create_task(self.renew_forever(lease_id, where, on_lost))
        try:
            yield lease_id
        except asyncio.CancelledError:
            if lost and aborts:
                if hasattr(body, "uncancel"):  # our own cancel, now the policy's error: withdraw it (3.11+)
                    body.uncancel()
                raise self.policy.lost_error(lost[0]) from None
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not lost:
                await asyncio.shield(self.release(lease_id, released))


async def _maybe_await(value) -> None:
    if asyncio.iscoroutine(value):
        await value
