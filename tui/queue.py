"""The queue panel's data: jobs by state, the run index and its sync, the team x task rows,
pages of episodes.

Every count is of jobs (episodes) by their latest run, attempts apart. Until the run index is
scanned they come from the server (`flows/reports/jobs.py`, as `evalq campaign list` counts
them: Prefect's count endpoint and the runs of retried jobs); then from the index, kept current
with a few small reads per refresh, including the runs in an active state, so a run set
Scheduled again after it failed (the Prefect UI's Retry) counts in flight at the next refresh.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from uuid import UUID

from flows import naming
from tui.aggregate import ACTIVE_TYPES, bucket_of, pages
from tui.cache import Cached
from tui.gateway import PAGE, Gateway, episode_row, run_filter, run_tag
from tui.models import BUCKETS, EpisodesPage, QueueSnapshot, RowsPage
from tui.run_index import RunIndex

SYNC_MARGIN = timedelta(seconds=10)
"""Overlap between index syncs: runs committed late are still seen."""
REUSE_SYNC_SECONDS = 0.5
"""A `rows()` call this soon after `snapshot()` synced the index does not sync it again."""
SERVER_COUNTS_SECONDS = 5.0
"""Before the index is scanned, the server's job counts are reused this long."""
CANCEL_CHECKS = 50
"""At most this many failed runs are checked for a cancel request per sync (once per end)."""


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
        self._server_counts = Cached(SERVER_COUNTS_SECONDS)

    def forget(self) -> None:
        """Drop the index (another campaign is watched); a first scan under way stops."""
        if self._scan is not None:
            self._scan.cancel()
        self.index, self._scan = RunIndex(), None
        self._server_counts = Cached(SERVER_COUNTS_SECONDS)

    async def snapshot(self) -> QueueSnapshot | None:
        """Jobs by state, jobs dispatched, attempts, plan and pause: from the run index once it
        is scanned (a sync: a few small reads), before that from the server's counts."""
        from flows.reports.jobs import count_jobs

        gateway = self.gateway
        if await gateway.ensure_campaign() is None:
            return None
        plan = await gateway.plan()
        if self.index.scanned:
            await self.sync_index()
            self._synced = time.monotonic()
            counts, runs, attempts, dispatched, skipped = self.index.counts()
        else:
            client, campaign = await gateway.client(), gateway.campaign
            jobs = await self._server_counts.get("jobs", lambda: count_jobs(client, campaign, plan.total, check_cancels=False))
            counts = dict.fromkeys(BUCKETS, 0)
            for (state_type, state_name), n in jobs.by_state.items():
                counts[bucket_of(state_type, state_name)] += n
            runs, attempts, dispatched = jobs.runs, jobs.attempts, jobs.jobs
            skipped = jobs.by_state.get(("COMPLETED", naming.SKIPPED_STATE), 0)
        paused = await gateway.variable(naming.pause_variable(gateway.campaign))
        return QueueSnapshot(
            campaign=gateway.campaign,
            counts=counts,
            runs=runs,
            dispatched=dispatched,
            planned=plan.total,
            skipped=skipped,
            paused=paused in (True, "true", "True"),
            taken_at=datetime.now(timezone.utc),
            attempts=attempts,
        )

    # -- the run index ------------------------------------------------------------
    async def sync_index(self, max_pages: int = 50) -> RunIndex:
        """Bring the run index up to date; the first scan reads `max_pages` pages per call.

        Scan: runs by expected start time from the cursor on (new runs, and retried ones,
        whose expected start moves forward). Once scanned: runs started or ended since the
        last sync (Prefect sets start and end times on entering Running and final states),
        and the runs in an active state (few under just-in-time dispatch; among them a run
        that left a final state, which moves no start time). Each is an indexed read, so a
        sync costs a few requests at any campaign size. Then the latest failures not checked
        yet are checked for a cancel request.
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
            async for runs in self.gateway.run_pages(run_filter(tags, types=sorted(ACTIVE_TYPES))):
                seen |= self.index_runs(runs)
            await self.reread(index.active - seen)
        index.synced_at = started
        await self.check_cancels()
        return index

    async def check_cancels(self, most: int = CANCEL_CHECKS) -> None:
        """Whether the latest failed runs went through Cancelling (their jobs then count as
        cancelled, as the campaign and the report count them): read once per end."""
        from flows.campaign.history import went_through_cancelling

        todo = self.index.unchecked_failures()[:most]
        client, gate = await self.gateway.client(), asyncio.Semaphore(4)

        async def check(run_id: str) -> None:
            async with gate:
                asked = await went_through_cancelling(client, UUID(run_id))
            self.index.record_cancel(run_id, self.index.runs[run_id].state_id, asked)

        await asyncio.gather(*(check(run_id) for run_id in todo))

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
            self.index.add(
                str(run.id), run_tag(run, "team"), run_tag(run, "task"), bucket_of(kind, name),
                attempt=naming.attempt_of(run.tags), skipped=kind == "COMPLETED" and name == naming.SKIPPED_STATE,
                active=kind in ACTIVE_TYPES, job_id=naming.job_id_of_run_name(run.name),
                rerun=naming.RERUN_TAG in run.tags, state_id=str(state.id) if state else "",
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
