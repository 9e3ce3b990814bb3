"""The queue panel's data: counts by state, the run index and its sync, the team x task rows,
pages of episodes.

State counts come from Prefect's count endpoints (`/flow_runs/history` groups them by state
in one query) until the run index is scanned; the team x task table comes from that index,
kept current with a few small reads per refresh.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from uuid import UUID

from flows import naming
from tui.aggregate import ACTIVE_TYPES, RunIndex, bucket_of, pages
from tui.gateway import PAGE, Gateway, episode_row, run_filter, run_tag
from tui.models import BUCKETS, EpisodesPage, QueueSnapshot, RowsPage

SYNC_MARGIN = timedelta(seconds=10)
"""Overlap between index syncs: runs committed late are still seen."""
REUSE_SYNC_SECONDS = 0.5
"""A `rows()` call this soon after `snapshot()` synced the index does not sync it again."""


class QueueReads:
    """One campaign's queue through `gateway`: its run index, counts and rows."""

    def __init__(self, gateway: Gateway, page_size: int = 50, rows_page_size: int = 20, sync_margin: timedelta = SYNC_MARGIN):
        self.gateway = gateway
        self.page_size = page_size
        self.rows_page_size = rows_page_size
        self.sync_margin = sync_margin
        self.index = RunIndex()
        self._scan: asyncio.Future | None = None
        self._synced = float("-inf")
        """When `snapshot()` last synced the index (monotonic): `rows()` right after it reuses that sync."""

    def forget(self) -> None:
        """Drop the index (another campaign is watched); a first scan under way stops."""
        if self._scan is not None:
            self._scan.cancel()
        self.index, self._scan = RunIndex(), None

    async def state_counts(self, *extra: str) -> dict[tuple[str, str], int]:
        """Runs by (state type, state name) in one query: Prefect's run-history count endpoint
        over a single interval spanning all time groups the count by state."""
        client = await self.gateway.client()
        body = {
            "history_start": "2000-01-01T00:00:00Z",
            "history_end": "2100-01-01T00:00:00Z",
            "history_interval_seconds": 100 * 366 * 86400.0,
            "flow_runs": run_filter(self.gateway.tags(*extra)).model_dump(mode="json", exclude_unset=True),
        }
        response = await client.request("POST", "/flow_runs/history", json=body)
        counts: dict[tuple[str, str], int] = {}
        for interval in response.json():
            for state in interval["states"]:
                key = (state["state_type"], state["state_name"])
                counts[key] = counts.get(key, 0) + state["count_runs"]
        return counts

    async def snapshot(self) -> QueueSnapshot | None:
        """Counts by state, jobs dispatched, plan and pause: from the run index once it is
        scanned (a sync: a few small reads), before that from the server (one history query
        and one count)."""
        gateway = self.gateway
        if await gateway.ensure_campaign() is None:
            return None
        if self.index.scanned:
            await self.sync_index()
            self._synced = time.monotonic()
            counts, runs, dispatched, skipped = self.index.counts()
        else:
            by_state, dispatched = await asyncio.gather(self.state_counts(), gateway.count("attempt:1"))
            counts = dict.fromkeys(BUCKETS, 0)
            for (state_type, state_name), n in by_state.items():
                counts[bucket_of(state_type, state_name)] += n
            runs = sum(by_state.values())
            skipped = sum(n for (kind, name), n in by_state.items() if kind == "COMPLETED" and name == naming.SKIPPED_STATE)
        plan, paused = await asyncio.gather(gateway.plan(), gateway.variable(naming.pause_variable(gateway.campaign)))
        return QueueSnapshot(
            campaign=gateway.campaign,
            counts=counts,
            runs=runs,
            dispatched=dispatched,
            planned=plan.total,
            skipped=skipped,
            paused=paused in (True, "true", "True"),
            taken_at=datetime.now(timezone.utc),
        )

    # -- the run index ------------------------------------------------------------
    async def sync_index(self, max_pages: int = 50) -> RunIndex:
        """Bring the run index up to date; the first scan reads `max_pages` pages per call.

        Scan: runs by expected start time from the cursor on (new runs, and retried ones,
        whose expected start moves forward). Once scanned: runs started or ended since the
        last sync (Prefect sets start and end times on entering Running and final states),
        which are all the changes the table's done / running / failed columns can see.
        Each is an indexed range read, so a sync costs a few requests at any campaign size.
        """
        index, tags = self.index, self.gateway.tags()
        started = datetime.now(timezone.utc)
        for _ in range(max_pages):
            runs = await self.gateway.read_runs(run_filter(tags, expected_after=index.cursor), limit=PAGE, sort="EXPECTED_START_TIME_ASC")
            self.index_runs(runs)
            if runs:
                last = runs[-1].expected_start_time
                # 200 runs sharing one timestamp would pin the cursor: step past it
                index.cursor = last if last != index.cursor else last + timedelta(microseconds=1)
            if len(runs) < PAGE:
                index.scanned = True
                index.cursor = min(index.cursor or started, started - self.sync_margin)
                break
        if not index.scanned:
            return index
        if index.synced_at is not None:
            since = index.synced_at - self.sync_margin
            seen: set[str] = set()
            for field in ("start_time", "end_time"):
                async for runs in self.gateway.run_pages(run_filter(tags, **{f"{field}_after": since})):
                    seen |= self.index_runs(runs)
            await self.reread(index.active - seen)
        index.synced_at = started
        return index

    async def reread(self, run_ids: set[str]) -> None:
        """Read runs by id, 200 a request, four requests at a time: the runs still active, whose
        state may have changed without a new start or end time (Loading -> WaitingForServer,
        Scheduled -> Pending, Cancelling)."""
        ids = sorted(run_ids)
        gate = asyncio.Semaphore(4)

        async def batch(chunk: list[str]) -> None:
            async with gate:
                flt = run_filter(self.gateway.tags(), ids=[UUID(i) for i in chunk])
                self.index_runs(await self.gateway.read_runs(flt, limit=len(chunk), sort="ID_DESC"))

        await asyncio.gather(*(batch(ids[start:start + PAGE]) for start in range(0, len(ids), PAGE)))

    def index_runs(self, runs) -> set[str]:
        """Add (or update) the runs in the index; their ids."""
        seen = set()
        for run in runs:
            state = run.state
            kind, name = (state.type.value, state.name or "") if state else ("PENDING", "")
            attempt = naming.tag_value(run.tags, "attempt")
            self.index.add(
                str(run.id), run_tag(run, "team"), run_tag(run, "task"), bucket_of(kind, name),
                attempt=int(attempt) if attempt and attempt.isdigit() else 1,
                skipped=kind == "COMPLETED" and name == naming.SKIPPED_STATE, active=kind in ACTIVE_TYPES,
            )
            seen.add(str(run.id))
        return seen

    # -- the table ----------------------------------------------------------------
    async def rows(self, page: int = 0) -> RowsPage:
        """One page of the team x task table, from the run index.

        The first full scan runs as a task of its own, so refreshes keep their pace and
        show the table filling in; afterwards each call syncs the index first.
        """
        if await self.gateway.ensure_campaign() is None:
            return RowsPage([], 0, 1, 0)
        if self._scan is not None and self._scan.done():
            scan, self._scan = self._scan, None
            if scan.exception() is not None:
                raise scan.exception()  # the banner shows it; the next call scans again
        if self.index.scanned:
            fresh = time.monotonic() - self._synced < REUSE_SYNC_SECONDS
            index = self.index if fresh else await self.sync_index()
        else:
            if self._scan is None:
                self._scan = asyncio.ensure_future(self.sync_index(max_pages=10**9))
            index = self.index
        rows = index.rows(await self.gateway.plan_rows())
        count = pages(len(rows), self.rows_page_size)
        page = min(max(0, page), count - 1)
        visible = rows[page * self.rows_page_size:(page + 1) * self.rows_page_size]
        return RowsPage(visible, page, count, len(rows), len(index.runs), index.scanned)

    async def episodes(self, team: str = "", task: str = "", page: int = 0, types: list[str] | None = None) -> EpisodesPage:
        """A page of episode runs, optionally of one team and task or of some state types."""
        extra = [tag for tag in (team and f"team:{team}", task and f"task:{task}") if tag]
        flt = run_filter(self.gateway.tags(*extra), types)
        client = await self.gateway.client()
        total = await client.count_flow_runs(flow_run_filter=flt)
        count = pages(total, self.page_size)
        page = min(max(0, page), count - 1)
        runs = await self.gateway.read_runs(flt, limit=self.page_size, offset=page * self.page_size)
        return EpisodesPage(team, task, [episode_row(run) for run in runs], page, count, total)
