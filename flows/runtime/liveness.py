"""Does anything serve a work pool, and is the runner that claimed a run still alive?

Two facts Prefect records, read the same way for every kind of pool (embedded, the user's
server, SLURM, Kubernetes, or one no worker ever polled):
- **A queue's `last_polled`**, written whenever a worker (ours, or Prefect's process, SLURM
  and Kubernetes workers) asks the pool for scheduled runs. A pool is *unserved* once nothing
  has polled the queue of its episodes for `UNSERVED_SECONDS`. Its age is taken against the
  server's own clock (the answer's `Date` header), so clocks of other hosts do not matter; a
  queue never polled counts from its creation.
- **A worker's heartbeat.** Prefect reports a worker ONLINE while its last heartbeat is younger
  than three of its intervals; our runners heartbeat every `RUNNER_HEARTBEAT_SECONDS`, so a dead
  one reads OFFLINE within 30 s (at Prefect's default of 30 s it would take 90). A runner that
  stops, and the supervisor of one that died, delete its row: it is gone at once. Pool status
  is never used: any other live worker keeps it READY.

One `read_pool_service` is two API calls (the pool's queues, its workers; the pool itself
once, for its type); everything else here is pure. Used by the campaign (stats line and its
safety net for runs claimed by the dead), `evalq campaign status` and evaltui.
"""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime

from pydantic import BaseModel

from flows.naming import (
    KUBERNETES_POOL_TYPE,
    PREFORK_POOL_TYPE,
    RUNNER_POOL_TYPE,
    SLURM_POOL_TYPE,
)

RUNNER_HEARTBEAT_SECONDS = 10
"""How often our runners heartbeat: Prefect reads one OFFLINE three intervals after its last."""
UNSERVED_SECONDS = 30.0
"""A pool nothing has polled for this long is unserved."""
RUNNER_POLL_SECONDS = 15.0
"""Our runners' safety poll while Prefect's Scheduled-run events wake them (they poll even when
full): well within `UNSERVED_SECONDS`, and a lost event delays a pick-up this long at most."""
WORKERS_PAGE = 200


class PoolService(BaseModel):
    """Who serves one work pool, as read at one moment."""

    pool: str
    exists: bool = True
    pool_type: str | None = None
    quiet_seconds: float | None = None
    """Since the queue of its episodes was last polled (or created, if never polled); None: no queue."""
    ever_polled: bool = False
    live_workers: list[str] = []
    """Workers and runners Prefect reads ONLINE (heartbeat younger than three intervals)."""

    @property
    def served(self) -> bool:
        return self.exists and self.quiet_seconds is not None and self.quiet_seconds < UNSERVED_SECONDS

    def alive(self, worker: str) -> bool:
        """Whether `worker` heartbeats (a deleted or silent one does not)."""
        return worker in self.live_workers

    def start_hint(self) -> str:
        """The command that starts something to serve this pool."""
        if not self.exists:
            return f"work pool {self.pool!r} does not exist: `evalq workpools apply` creates evalq's pools"
        return start_command(self.pool, self.pool_type)

    def note(self) -> str:
        """One line: whether anything serves the pool, and if not, how to start something."""
        if not self.exists:
            return self.start_hint()
        live = len(self.live_workers)
        if self.served and not self.ever_polled:
            return f"work pool {self.pool}: created {self.quiet_seconds:.0f} s ago, not polled yet"
        if self.served:
            return f"work pool {self.pool}: polled {self.quiet_seconds:.0f} s ago, {live} live worker{'s' if live != 1 else ''}"
        if self.quiet_seconds is None:
            silence = "no queue to poll"
        elif self.ever_polled:
            silence = f"no live worker or runner has polled it for {self.quiet_seconds:.0f} s"
        else:
            silence = f"no worker or runner has ever polled it (created {self.quiet_seconds:.0f} s ago)"
        return f"work pool {self.pool}: {silence}; start one: {self.start_hint()}"


def start_command(pool: str, pool_type: str | None) -> str:
    """What starts a worker (or runner) for a pool of this type."""
    if pool_type == RUNNER_POOL_TYPE:
        return f"`evalq runner --pool {pool}` (on SLURM: `evalq workpools slurm-runners --pool {pool} --keep N ...`)"
    if pool_type in (PREFORK_POOL_TYPE, SLURM_POOL_TYPE, KUBERNETES_POOL_TYPE):
        return f"`prefect worker start --pool {pool} --type {pool_type}`"
    return f"`prefect worker start --pool {pool}`"


def quiet_seconds(last_polled: dt.datetime | None, created: dt.datetime | None, server_now: dt.datetime) -> float | None:
    """Seconds since the queue was last polled, or since it was created if never (pure)."""
    since = last_polled or created
    return None if since is None else max(0.0, (server_now - since).total_seconds())


def server_time(response) -> dt.datetime:
    """The server's clock from an answer's `Date` header (this host's if it has none)."""
    try:
        return parsedate_to_datetime(response.headers["date"])
    except (KeyError, TypeError, ValueError):
        return dt.datetime.now(dt.timezone.utc)


async def read_pool_service(client, pool: str, queue: str | None = None, pool_type: str | None = None) -> PoolService:
    """Who serves `pool` now: `queue` is the one its episodes wait in (default: the latest polled
    of its queues). Pass `pool_type` when known to save its read."""
    from prefect.client.schemas.objects import WorkQueue
    from prefect.exceptions import ObjectNotFound

    try:
        if pool_type is None:
            pool_type = (await client.read_work_pool(pool)).type
        response = await client.request("POST", "/work_pools/{name}/queues/filter", path_params={"name": pool}, json={})
    except ObjectNotFound:
        return PoolService(pool=pool, exists=False)
    except Exception as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) == 404:
            return PoolService(pool=pool, exists=False)
        raise
    now = server_time(response)
    queues = [WorkQueue.model_validate(q) for q in response.json()]
    chosen = [q for q in queues if q.name == queue] or queues
    ages = [(quiet_seconds(q.last_polled, q.created, now), q.last_polled is not None) for q in chosen]
    ages = [age for age in ages if age[0] is not None]
    quiet, ever = min(ages) if ages else (None, False)
    return PoolService(pool=pool, pool_type=pool_type, quiet_seconds=quiet, ever_polled=ever,
                       live_workers=await live_workers(client, pool))


async def live_workers(client, pool: str) -> list[str]:
    """Names of the pool's workers Prefect reads ONLINE (rows it stored OFFLINE are skipped unread)."""
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.client.schemas.objects import WorkerStatus

    stored_online = WorkerFilter(status=WorkerFilterStatus(any_=[WorkerStatus.ONLINE.value]))
    names, offset = [], 0
    while True:
        page = await client.read_workers_for_work_pool(pool, worker_filter=stored_online, offset=offset, limit=WORKERS_PAGE)
        names += [worker.name for worker in page if worker.status == WorkerStatus.ONLINE]
        if len(page) < WORKERS_PAGE:
            return names
        offset += WORKERS_PAGE


async def pool_has_runs(client, pool: str, state_types: list[str]) -> bool:
    """Whether a run of `pool` is in one of `state_types` (e.g. SCHEDULED: one waits); a read of
    runs, which does not count as a poll of the pool."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in state_types]))),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])), limit=1,
    )
    return bool(runs)


async def forget_worker(client, pool: str, name: str) -> bool:
    """Delete a worker's row so it reads gone at once (a runner that stops, or died); False if absent."""
    import httpx

    try:
        await client.request("DELETE", "/work_pools/{pool}/workers/{name}", path_params={"pool": pool, "name": name})
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return False
        raise
    return True
