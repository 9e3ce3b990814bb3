"""The logs panel's data: log lines of the campaign's episodes, backfilled from the logs API
and followed live over Prefect's websocket (polling the API when the socket stays silent).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Callable
from uuid import UUID

from flows import naming
from tui.gateway import PAGE, Gateway, api_url, run_filter, run_tag
from tui.models import LogLine


class LogReads:
    """Log lines of one campaign's episodes through `gateway`."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self._runs: dict[str, tuple[str, str, str] | None] = {}
        """flow_run_id -> (job id, team, task), None when not an episode of this campaign."""

    def forget(self) -> None:
        """Drop the run names learnt for the previous campaign."""
        self._runs = {}

    async def resolve_runs(self, ids: set[str]) -> None:
        """Learn which flow runs are episodes of this campaign (cached, batched)."""
        unknown = [UUID(i) for i in ids if i not in self._runs]
        for start in range(0, len(unknown), PAGE):
            batch = unknown[start:start + PAGE]
            runs = await self.gateway.read_runs(run_filter(self.gateway.tags(), ids=batch), limit=len(batch))
            found = {str(run.id): (naming.job_id_of_run_name(run.name), run_tag(run, "team"), run_tag(run, "task")) for run in runs}
            for run_id in batch:
                self._runs[str(run_id)] = found.get(str(run_id))

    async def log_lines(self, logs: list) -> list[LogLine]:
        """Prefect `Log`s as lines, keeping only this campaign's episodes."""
        await self.resolve_runs({str(log.flow_run_id) for log in logs if log.flow_run_id})
        lines = []
        for log in logs:
            known = self._runs.get(str(log.flow_run_id)) if log.flow_run_id else None
            if known is None:
                continue
            episode, team, task = known
            lines.append(LogLine(str(log.id), log.timestamp, log.level, log.message, str(log.flow_run_id), episode, team, task))
        return lines

    async def recent_runs(self) -> list[UUID]:
        """The campaign's `PAGE` most recently started runs: the ones whose lines are the latest."""
        runs = await self.gateway.read_runs(run_filter(self.gateway.tags()), limit=PAGE, sort="START_TIME_DESC")
        return [run.id for run in runs]

    async def backfill(self, since: datetime | None = None, limit: int = 200, flow_run_id: UUID | None = None) -> list[LogLine]:
        """The latest `limit` (at most 200, the server's cap) log lines after `since`, oldest first:
        of the campaign's recent runs (the server's latest lines may all be another campaign's)."""
        from prefect.client.schemas import filters as f
        from prefect.client.schemas.sorting import LogSort

        client = await self.gateway.client()
        kwargs: dict[str, Any] = {}
        if since:
            kwargs["timestamp"] = f.LogFilterTimestamp(after_=since)
        runs = [flow_run_id] if flow_run_id else await self.recent_runs()
        if not runs:
            return []
        kwargs["flow_run_id"] = f.LogFilterFlowRunId(any_=runs)
        logs = await client.read_logs(log_filter=f.LogFilter(**kwargs), limit=min(limit, 200), offset=0, sort=LogSort.TIMESTAMP_DESC)
        return list(reversed(await self.log_lines(logs)))

    async def tail(
        self,
        on_lines: Callable[[list[LogLine]], None],
        on_status: Callable[[str | None], None],
        flush_seconds: float = 0.3,
        poll_seconds: float = 2.0,
    ) -> None:
        """Backfill, then follow the websocket; on disconnect, backfill the gap and resubscribe.

        A server streams logs out only with `PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED` and
        `..._STREAM_PUBLISHING_ENABLED`; without them the socket stays silent, so after
        `poll_seconds` of silence the gap is read from the logs API instead (lines are
        deduplicated by id downstream). `on_lines` gets batches, at most one per
        `flush_seconds`; `on_status` an error text while disconnected, None when following.
        Runs until cancelled.
        """
        from prefect.logging.clients import PrefectLogsSubscriber

        last: datetime | None = None

        def deliver(lines: list[LogLine]) -> None:
            nonlocal last
            if lines:
                last = max(last or lines[-1].timestamp, lines[-1].timestamp)
                on_lines(lines)

        async def catch_up() -> None:
            deliver(await self.backfill(since=last))

        delay = 1.0
        while True:
            try:
                await self.gateway.ensure_campaign()
                await catch_up()
                async with PrefectLogsSubscriber(api_url=api_url(), reconnection_attempts=0) as subscriber:
                    on_status(None)
                    delay = 1.0
                    pending: list = []
                    quiet = time.monotonic()
                    iterator = subscriber.__aiter__()
                    next_log = asyncio.ensure_future(iterator.__anext__())
                    try:
                        while True:
                            done, _ = await asyncio.wait({next_log}, timeout=flush_seconds)
                            if done:
                                pending.append(next_log.result())
                                next_log = asyncio.ensure_future(iterator.__anext__())
                                quiet = time.monotonic()
                                if len(pending) < 500:
                                    continue
                            if pending:
                                lines = await self.log_lines(pending)
                                pending = []
                                deliver(lines)
                            elif time.monotonic() - quiet > poll_seconds:
                                await catch_up()
                                quiet = time.monotonic()
                    finally:
                        next_log.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the tail must outlive any failure
                on_status(f"log stream disconnected ({type(exc).__name__}); retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
