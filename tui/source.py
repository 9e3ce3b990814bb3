"""evaltui's data side in one object: `Source` reads one campaign's snapshots and sends its actions.

A facade over the concern modules, so the app and the tests hold one object:
`tui.gateway` (client, raw reads, the campaign's plan), `tui.queue` (counts, run index, team x task
rows, episode pages), `tui.pools` (pool and server status), `tui.logs` (backfill and live tail),
`tui.detail` (the episode screen) and `tui.actions` (retry, cancel, pause). Every method is a
coroutine returning `tui.models` snapshots; nothing here touches widgets. The app runs them on
its own background loop (`tui.loop`), never on the UI thread.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable
from uuid import UUID

from tui import actions
from tui.detail import episode_detail
from tui.gateway import Gateway
from tui.logs import LogReads
from tui.models import (
    EpisodeDetail,
    EpisodesPage,
    LogLine,
    PoolsSnapshot,
    QueueSnapshot,
    RowsPage,
)
from tui.pools import PoolReads
from tui.queue import SYNC_MARGIN, QueueReads
from tui.run_index import RunIndex


class Source(Gateway):
    """Reads one campaign (or discovers the latest one) through a Prefect client."""

    def __init__(self, campaign: str | None = None, page_size: int = 50, rows_page_size: int = 20, sync_margin: timedelta = SYNC_MARGIN):
        super().__init__(campaign)
        self.queue_reads = QueueReads(self, page_size, rows_page_size, sync_margin)
        self.pool_reads = PoolReads(self)
        self.log_reads = LogReads(self)

    async def switch(self, campaign: str) -> None:
        """Watch another campaign: drop the index and run names learnt for the previous one."""
        self.queue_reads.forget()
        self.log_reads.forget()
        self.forget_plan()
        self.campaign = campaign

    @property
    def index(self) -> RunIndex:
        return self.queue_reads.index

    @index.setter
    def index(self, index: RunIndex) -> None:
        self.queue_reads.index = index

    # -- queue ------------------------------------------------------------------
    async def queue(self) -> QueueSnapshot | None:
        return await self.queue_reads.snapshot()

    async def sync_index(self, max_pages: int = 50) -> RunIndex:
        return await self.queue_reads.sync_index(max_pages)

    async def rows(self, page: int = 0) -> RowsPage:
        return await self.queue_reads.rows(page)

    async def episodes(self, team: str = "", task: str = "", page: int = 0, types: list[str] | None = None) -> EpisodesPage:
        return await self.queue_reads.episodes(team, task, page, types)

    # -- pools, logs, detail ------------------------------------------------------
    async def pools(self) -> PoolsSnapshot:
        return await self.pool_reads.snapshot()

    async def backfill_logs(self, since: datetime | None = None, limit: int = 200, flow_run_id: UUID | None = None) -> list[LogLine]:
        return await self.log_reads.backfill(since, limit, flow_run_id)

    async def tail_logs(self, on_lines: Callable[[list[LogLine]], None], on_status: Callable[[str | None], None],
                        flush_seconds: float = 0.3, poll_seconds: float = 2.0) -> None:
        await self.log_reads.tail(on_lines, on_status, flush_seconds, poll_seconds)

    async def detail(self, flow_run_id: UUID) -> EpisodeDetail:
        return await episode_detail(self, self.log_reads, flow_run_id)

    # -- actions ----------------------------------------------------------------
    async def retry(self, flow_run_id: UUID) -> str:
        return await actions.retry(self, flow_run_id)

    async def cancel(self, flow_run_id: UUID) -> str:
        return await actions.cancel(self, flow_run_id)

    async def set_paused(self, paused: bool) -> str:
        return await actions.set_paused(self, paused)
