"""Data access: one campaign's state read from (and actions sent to) the Prefect API.

Every method is a coroutine returning `tui.models` snapshots; nothing here touches
widgets. State counts come from Prefect's count endpoints (`/flow_runs/history` groups
them by state in one query), lists are paged, and the team x task table comes from an
index kept current with a few small reads per refresh. The app runs these coroutines on
its own background loop (`tui.loop`), never on the UI thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from uuid import UUID

from flows import naming
from flows.slot_events import SlotEvent, holder_events_query, holders_from_events, server_events_query
from tui.aggregate import ACTIVE_TYPES, RunIndex, bucket_of, pages
from tui.cache import Cached
from tui.waiting import mark_quarantined, why_waiting
from tui.models import (
    BUCKETS,
    EpisodeDetail,
    EpisodeRow,
    EpisodesPage,
    LogLine,
    PoolsSnapshot,
    PoolStatus,
    QueueSnapshot,
    RowsPage,
    ServerStatus,
    StateChange,
)

UNREACHABLE_WINDOW = timedelta(minutes=10)
HOLDER_WINDOW = timedelta(days=2)
PAGE = 200
"""Prefect's largest page of flow runs."""
SYNC_MARGIN = timedelta(seconds=10)
"""Overlap between index syncs: runs committed late are still seen."""
PLAN_SECONDS = 30.0
"""How long the campaign's plan (variable and artifact) is reused before it is read again."""
REUSE_SYNC_SECONDS = 0.5
"""A `rows()` call this soon after `queue()` synced the index does not sync it again."""


def api_url() -> str:
    """`PREFECT_API_URL`, or a local server's default address when unset."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or "http://127.0.0.1:4200/api"


def ui_url() -> str:
    return (os.environ.get("PREFECT_UI_URL") or api_url().removesuffix("/api")).rstrip("/")


def flow_run_url(flow_run_id: UUID | str) -> str:
    """The episode's page in the Prefect UI."""
    return f"{ui_url()}/runs/flow-run/{flow_run_id}"


def run_filter(
    tags: list[str],
    types: list[str] | None = None,
    names: list[str] | None = None,
    ids: list[UUID] | None = None,
    like: str | None = None,
    expected_after: datetime | None = None,
    start_time_after: datetime | None = None,
    end_time_after: datetime | None = None,
):
    """A `FlowRunFilter` with only the given criteria set (Prefect sends unset fields as absent)."""
    from prefect.client.schemas import filters as f

    kwargs: dict[str, Any] = {"tags": f.FlowRunFilterTags(all_=tags)}
    if expected_after:
        kwargs["expected_start_time"] = f.FlowRunFilterExpectedStartTime(after_=expected_after)
    if start_time_after:
        kwargs["start_time"] = f.FlowRunFilterStartTime(after_=start_time_after)
    if end_time_after:
        kwargs["end_time"] = f.FlowRunFilterEndTime(after_=end_time_after)
    if types or names:
        state: dict[str, Any] = {}
        if types:
            state["type"] = f.FlowRunFilterStateType(any_=types)
        if names:
            state["name"] = f.FlowRunFilterStateName(any_=names)
        kwargs["state"] = f.FlowRunFilterState(**state)
    if ids:
        kwargs["id"] = f.FlowRunFilterId(any_=ids)
    if like:
        kwargs["name"] = f.FlowRunFilterName(like_=like)
    return f.FlowRunFilter(**kwargs)


def episode_row(run) -> EpisodeRow:
    """A Prefect `FlowRun` as a table row."""
    state = run.state
    return EpisodeRow(
        id=run.id,
        name=run.name,
        team=naming.tag_value(run.tags, "team") or "",
        task=naming.tag_value(run.tags, "task") or "",
        state_type=state.type.value if state else "UNKNOWN",
        state_name=state.name if state else "",
        attempt=naming.attempt_of(run.tags),
        pool=naming.tag_value(run.tags, "pool") or "",
        start_time=run.start_time,
        end_time=run.end_time,
    )


class Source:
    """Reads one campaign (or discovers the latest one) through a Prefect client."""

    def __init__(self, campaign: str | None = None, page_size: int = 50, rows_page_size: int = 20, sync_margin: timedelta = SYNC_MARGIN):
        self.campaign = campaign
        self.page_size = page_size
        self.rows_page_size = rows_page_size
        self.sync_margin = sync_margin
        self._client = None
        self.index = RunIndex()
        self._scan: asyncio.Future | None = None
        self._plan = Cached(PLAN_SECONDS)
        """The plan variable and the per-(team, task) plan: they change only when a campaign (re)starts."""
        self._queue_synced = float("-inf")
        """When `queue()` last synced the index (monotonic): `rows()` right after it reuses that sync."""
        self._runs: dict[str, tuple[str, str, str] | None] = {}
        """flow_run_id -> (episode, team, task), None when not an episode of this campaign."""

    # -- plumbing ---------------------------------------------------------------
    async def switch(self, campaign: str) -> None:
        """Watch another campaign: drop the index and run names learnt for the previous one."""
        if self._scan is not None:
            self._scan.cancel()
        self.campaign, self.index, self._runs, self._scan = campaign, RunIndex(), {}, None
        self._plan = Cached(PLAN_SECONDS)

    async def client(self):
        if self._client is None:
            from prefect.client.orchestration import PrefectClient
            from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

            client = PrefectClient(
                api_url(),
                auth_string=os.environ.get("PREFECT_API_AUTH_STRING") or PREFECT_API_AUTH_STRING.value(),
                api_key=os.environ.get("PREFECT_API_KEY") or PREFECT_API_KEY.value(),
                httpx_settings={"timeout": 15.0},
            )
            await client.__aenter__()
            self._client = client
        return self._client

    async def __aenter__(self) -> "Source":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)

    def tags(self, *extra: str) -> list[str]:
        return [naming.EPISODE_TAG, naming.campaign_tag(self.campaign or ""), *extra]

    async def count(self, *extra: str, types: list[str] | None = None, names: list[str] | None = None) -> int:
        client = await self.client()
        return await client.count_flow_runs(flow_run_filter=run_filter(self.tags(*extra), types, names))

    async def read_runs(self, flow_run_filter, limit: int, offset: int = 0, sort: str = "NAME_ASC"):
        from prefect.client.schemas.sorting import FlowRunSort

        client = await self.client()
        return await client.read_flow_runs(flow_run_filter=flow_run_filter, limit=limit, offset=offset, sort=FlowRunSort[sort])

    async def variable(self, name: str) -> Any:
        client = await self.client()
        variable = await client.read_variable_by_name(name)
        return None if variable is None else variable.value

    async def events(self, body: dict, limit: int = 50) -> list[dict]:
        """One page (at most 50, the server's cap) of events matching `body`, an `EventFilter`."""
        client = await self.client()
        response = await client.request("POST", "/events/filter", json={"filter": body, "limit": min(limit, 50)})
        return response.json().get("events", [])

    # -- campaigns --------------------------------------------------------------
    async def campaigns(self) -> list[str]:
        """Campaigns with recent episodes, most recent first."""
        runs = await self.read_runs(run_filter([naming.EPISODE_TAG]), limit=200, sort="EXPECTED_START_TIME_DESC")
        seen: dict[str, None] = {}
        for run in runs:
            name = naming.tag_value(run.tags, "campaign")
            if name:
                seen.setdefault(name, None)
        return list(seen)

    async def ensure_campaign(self) -> str | None:
        """The campaign to show: the one asked for, else the most recent one."""
        if self.campaign is None:
            found = await self.campaigns()
            if found:
                self.campaign = found[0]
        return self.campaign

    # -- queue ------------------------------------------------------------------
    async def state_counts(self, *extra: str) -> dict[tuple[str, str], int]:
        """Runs by (state type, state name) in one query: Prefect's run-history count endpoint
        over a single interval spanning all time groups the count by state."""
        client = await self.client()
        body = {
            "history_start": "2000-01-01T00:00:00Z",
            "history_end": "2100-01-01T00:00:00Z",
            "history_interval_seconds": 100 * 366 * 86400.0,
            "flow_runs": run_filter(self.tags(*extra)).model_dump(mode="json", exclude_unset=True),
        }
        response = await client.request("POST", "/flow_runs/history", json=body)
        counts: dict[tuple[str, str], int] = {}
        for interval in response.json():
            for state in interval["states"]:
                key = (state["state_type"], state["state_name"])
                counts[key] = counts.get(key, 0) + state["count_runs"]
        return counts

    async def queue(self) -> QueueSnapshot | None:
        """Counts by state, jobs dispatched, plan and pause: from the run index once it is
        scanned (a sync: a few small reads), before that from the server (one history query
        and one count)."""
        if await self.ensure_campaign() is None:
            return None
        if self.index.scanned:
            await self.sync_index()
            self._queue_synced = time.monotonic()
            counts, runs, dispatched, skipped = self.index.counts()
        else:
            by_state, dispatched = await asyncio.gather(self.state_counts(), self.count("attempt:1"))
            counts = dict.fromkeys(BUCKETS, 0)
            for (state_type, state_name), n in by_state.items():
                counts[bucket_of(state_type, state_name)] += n
            runs = sum(by_state.values())
            skipped = sum(n for (kind, name), n in by_state.items() if kind == "COMPLETED" and name == naming.SKIPPED_STATE)
        plan, paused = await asyncio.gather(self.plan(), self.variable(naming.pause_variable(self.campaign)))
        return QueueSnapshot(
            campaign=self.campaign,
            counts=counts,
            runs=runs,
            dispatched=dispatched,
            planned=plan.total,
            skipped=skipped,
            paused=paused in (True, "true", "True"),
            taken_at=datetime.now(timezone.utc),
        )

    async def plan(self):
        """The campaign's plan variable (`flows.campaign.CampaignPlan`), reused for `PLAN_SECONDS`;
        empty without a campaign or a plan."""
        from flows.campaign import CampaignPlan

        campaign = self.campaign
        if not campaign:
            return CampaignPlan.read(None)
        return CampaignPlan.read(
            await self._plan.get("variable", lambda: self.variable(naming.campaign_plan_variable(campaign))))

    async def plan_rows(self) -> dict[tuple[str, str], int] | None:
        """Planned episodes per (team, task) (`flows/plan.py`), reused for `PLAN_SECONDS`."""
        from flows.plan import read_plan

        client, campaign = await self.client(), self.campaign
        return await self._plan.get("rows", lambda: read_plan(client, campaign))

    # -- team x task rows ----------------------------------------------------------
    async def sync_index(self, max_pages: int = 50) -> RunIndex:
        """Bring the run index up to date; the first scan reads `max_pages` pages per call.

        Scan: runs by expected start time from the cursor on (new runs, and retried ones,
        whose expected start moves forward). Once scanned: runs started or ended since the
        last sync (Prefect sets start and end times on entering Running and final states),
        which are all the changes the table's done / running / failed columns can see.
        Each is an indexed range read, so a sync costs a few requests at any campaign size.
        """
        index = self.index
        started = datetime.now(timezone.utc)
        for _ in range(max_pages):
            runs = await self.read_runs(run_filter(self.tags(), expected_after=index.cursor), limit=PAGE, sort="EXPECTED_START_TIME_ASC")
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
                seen |= await self.index_pages(run_filter(self.tags(), **{f"{field}_after": since}))
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
                self.index_runs(await self.read_runs(run_filter(self.tags(), ids=[UUID(i) for i in chunk]), limit=len(chunk), sort="ID_DESC"))

        await asyncio.gather(*(batch(ids[start:start + PAGE]) for start in range(0, len(ids), PAGE)))

    async def index_pages(self, flow_run_filter) -> set[str]:
        """Index every run matching the filter; their ids."""
        offset, seen = 0, set()
        while True:
            runs = await self.read_runs(flow_run_filter, limit=PAGE, offset=offset, sort="ID_DESC")
            seen |= self.index_runs(runs)
            if len(runs) < PAGE:
                return seen
            offset += PAGE

    def index_runs(self, runs) -> set[str]:
        seen = set()
        for run in runs:
            state = run.state
            kind, name = (state.type.value, state.name or "") if state else ("PENDING", "")
            attempt = naming.tag_value(run.tags, "attempt")
            self.index.add(
                str(run.id), naming.tag_value(run.tags, "team") or "", naming.tag_value(run.tags, "task") or "", bucket_of(kind, name),
                attempt=int(attempt) if attempt and attempt.isdigit() else 1,
                skipped=kind == "COMPLETED" and name == naming.SKIPPED_STATE, active=kind in ACTIVE_TYPES,
            )
            seen.add(str(run.id))
        return seen

    async def rows(self, page: int = 0) -> RowsPage:
        """One page of the team x task table, from the run index.

        The first full scan runs as a task of its own, so refreshes keep their pace and
        show the table filling in; afterwards each call syncs the index first.
        """
        if await self.ensure_campaign() is None:
            return RowsPage([], 0, 1, 0)
        if self._scan is not None and self._scan.done():
            scan, self._scan = self._scan, None
            if scan.exception() is not None:
                raise scan.exception()  # the banner shows it; the next call scans again
        if self.index.scanned:
            fresh = time.monotonic() - self._queue_synced < REUSE_SYNC_SECONDS
            index = self.index if fresh else await self.sync_index()
        else:
            if self._scan is None:
                self._scan = asyncio.ensure_future(self.sync_index(max_pages=10**9))
            index = self.index
        rows = index.rows(await self.plan_rows())
        count = pages(len(rows), self.rows_page_size)
        page = min(max(0, page), count - 1)
        visible = rows[page * self.rows_page_size:(page + 1) * self.rows_page_size]
        return RowsPage(visible, page, count, len(rows), len(index.runs), index.scanned)

    async def episodes(self, team: str = "", task: str = "", page: int = 0, types: list[str] | None = None) -> EpisodesPage:
        """A page of episode runs, optionally of one team and task or of some state types."""
        extra = [tag for tag in (team and f"team:{team}", task and f"task:{task}") if tag]
        flt = run_filter(self.tags(*extra), types)
        client = await self.client()
        total = await client.count_flow_runs(flow_run_filter=flt)
        count = pages(total, self.page_size)
        page = min(max(0, page), count - 1)
        runs = await self.read_runs(flt, limit=self.page_size, offset=page * self.page_size)
        return EpisodesPage(team, task, [episode_row(run) for run in runs], page, count, total)

    # -- pools ------------------------------------------------------------------
    async def limits(self) -> dict[str, tuple[int, int]]:
        """evalq global concurrency limits: name -> (limit, active slots)."""
        client = await self.client()
        found: dict[str, tuple[int, int]] = {}
        offset = 0
        while True:
            batch = await client.read_global_concurrency_limits(limit=200, offset=offset)
            for limit in batch:
                if naming.is_evalq_limit(limit.name):
                    found[limit.name] = (limit.limit, limit.active_slots)
            if len(batch) < 200:
                return found
            offset += 200

    async def pools(self) -> PoolsSnapshot:
        await self.ensure_campaign()
        limits = await self.limits()
        server_pool = (await self.plan()).server_pools()
        since = datetime.now(timezone.utc)
        unreachable = await self.events(
            server_events_query([naming.SERVER_UNREACHABLE], since - UNREACHABLE_WINDOW, since + timedelta(minutes=1)), limit=50,
        )
        last_unreachable: dict[str, datetime] = {}
        for event in map(SlotEvent.from_event, unreachable):
            last_unreachable.setdefault(event.address, event.occurred)
            server_pool.setdefault(event.address, event.pool)

        servers = {naming.address_of_limit(name): value for name, value in limits.items() if naming.address_of_limit(name)}
        statuses = await asyncio.gather(*(
            self.server_status(address, server_pool.get(address, ""), capacity, busy, last_unreachable.get(address))
            for address, (capacity, busy) in sorted(servers.items())
        ))
        pool_names = sorted({naming.pool_of_limit(name) for name in limits if naming.pool_of_limit(name) is not None} | {s.pool for s in statuses})
        waiting = await self.waiting_by_pool() if self.campaign else {}
        result = []
        for pool in pool_names:
            wait = waiting.get(pool, 0)
            members = [s for s in statuses if s.pool == pool]
            capacity, busy = limits.get(naming.pool_limit(pool), (sum(s.capacity for s in members), sum(s.busy for s in members)))
            result.append(PoolStatus(pool or "(no pool)", capacity, busy, wait, members))
        return await mark_quarantined(await self.client(), PoolsSnapshot(result, datetime.now(timezone.utc)), limits)

    async def waiting_by_pool(self, most: int = 2000) -> dict[str, int]:
        """Episodes waiting for a server, by pool: few under just-in-time dispatch, so read and
        grouped here (one query) rather than counted pool by pool."""
        waiting: dict[str, int] = {}
        flt = run_filter(self.tags(), types=["RUNNING"], names=[naming.WAITING_STATE])
        for offset in range(0, most, PAGE):
            runs = await self.read_runs(flt, limit=PAGE, offset=offset, sort="ID_DESC")
            for run in runs:
                pool = naming.tag_value(run.tags, "pool") or ""
                waiting[pool] = waiting.get(pool, 0) + 1
            if len(runs) < PAGE:
                break
        return waiting

    async def server_status(self, address: str, pool: str, capacity: int, busy: int, unreachable: datetime | None) -> ServerStatus:
        holders = []
        if busy:
            events = await self.events(holder_events_query(address, HOLDER_WINDOW), limit=max(20, 4 * capacity))
            holders = holders_from_events(events)[-busy:]
            if not pool and events:
                pool = SlotEvent.from_event(events[0]).pool
        return ServerStatus(address, pool, capacity, busy, holders, unreachable)

    # -- logs -------------------------------------------------------------------
    async def resolve_runs(self, ids: set[str]) -> None:
        """Learn which flow runs are episodes of this campaign (cached, batched)."""
        unknown = [UUID(i) for i in ids if i not in self._runs]
        for start in range(0, len(unknown), 200):
            batch = unknown[start:start + 200]
            runs = await self.read_runs(run_filter(self.tags(), ids=batch), limit=len(batch))
            found = {str(run.id): (run.name, naming.tag_value(run.tags, "team") or "", naming.tag_value(run.tags, "task") or "") for run in runs}
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

    async def backfill_logs(self, since: datetime | None = None, limit: int = 200, flow_run_id: UUID | None = None) -> list[LogLine]:
        """The latest `limit` (at most 200, the server's cap) log lines after `since`, oldest first."""
        from prefect.client.schemas import filters as f
        from prefect.client.schemas.sorting import LogSort

        client = await self.client()
        kwargs: dict[str, Any] = {}
        if since:
            kwargs["timestamp"] = f.LogFilterTimestamp(after_=since)
        if flow_run_id:
            kwargs["flow_run_id"] = f.LogFilterFlowRunId(any_=[flow_run_id])
        logs = await client.read_logs(log_filter=f.LogFilter(**kwargs), limit=min(limit, 200), offset=0, sort=LogSort.TIMESTAMP_DESC)
        return list(reversed(await self.log_lines(logs)))

    async def tail_logs(
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

        async def catch_up() -> None:
            nonlocal last
            lines = await self.backfill_logs(since=last)
            if lines:
                last = max(last or lines[-1].timestamp, lines[-1].timestamp)
                on_lines(lines)

        delay = 1.0
        while True:
            try:
                await self.ensure_campaign()
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
                                if lines:
                                    last = max(last or lines[-1].timestamp, lines[-1].timestamp)
                                    on_lines(lines)
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

    # -- episode detail -----------------------------------------------------------
    async def detail(self, flow_run_id: UUID) -> EpisodeDetail:
        client = await self.client()
        run = await client.read_flow_run(flow_run_id)
        states = await client.read_flow_run_states(flow_run_id)
        row = episode_row(run)
        job = run.parameters.get("job") or {}
        job_id = job.get("id") or naming.job_id_of_run_name(run.name)
        siblings = await self.read_runs(run_filter(self.tags(), like=job_id), limit=50)
        attempts = sorted((episode_row(r) for r in siblings if naming.job_id_of_run_name(r.name) == job_id), key=lambda r: r.attempt)
        acquired = await self.events({
            "occurred": {"since": (datetime.now(timezone.utc) - timedelta(days=30)).isoformat()},
            "event": {"name": [naming.SLOT_ACQUIRED]},
            "related": {"id": [naming.flow_run_resource_id(flow_run_id)]},
            "order": "DESC",
        }, limit=1)
        server = SlotEvent.from_event(acquired[0]).address if acquired else None
        logs = await self.backfill_logs(limit=200, flow_run_id=flow_run_id)
        metrics, path = read_metrics(run.parameters)
        return EpisodeDetail(
            run=row,
            parameters=dict(run.parameters),
            states=[StateChange(s.timestamp, s.type.value, s.name or "", s.message or "") for s in sorted(states, key=lambda s: s.timestamp)],
            attempts=attempts,
            server=server,
            logs=logs,
            metrics=metrics,
            metrics_path=path,
            ui_url=flow_run_url(flow_run_id),
            waiting=await why_waiting(client, run),
        )

    # -- actions ----------------------------------------------------------------
    async def retry(self, flow_run_id: UUID) -> str:
        """Ask the episode's campaign to run a failed, crashed or cancelled episode again.

        Through the campaign, not by forcing the run's state: its tally and `failed.txt` stay true
        (`flows/retry_requests.py`)."""
        from flows.campaign_admin import campaign_flow_runs
        from flows.retry_requests import RetryRequest, request_retry

        client = await self.client()
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

    async def cancel(self, flow_run_id: UUID) -> str:
        """Ask the worker to cancel a running or queued episode (Cancelling)."""
        from prefect.client.schemas.objects import StateType
        from prefect.states import State

        client = await self.client()
        run = await client.read_flow_run(flow_run_id)
        if run.state is None or run.state.is_final():
            raise ActionRefused(f"{run.name} is already {run.state.name if run.state else 'finished'}")
        await client.set_flow_run_state(flow_run_id, State(type=StateType.CANCELLING, message="Cancelled from evaltui"), force=True)
        return f"{run.name} cancelling"

    async def set_paused(self, paused: bool) -> str:
        """Pause or resume the campaign's dispatch through its pause variable."""
        from prefect.client.schemas.actions import VariableCreate, VariableUpdate

        if await self.ensure_campaign() is None:
            raise ActionRefused("no campaign to pause")
        client = await self.client()
        name = naming.pause_variable(self.campaign)
        if await client.read_variable_by_name(name) is None:
            await client.create_variable(VariableCreate(name=name, value=paused))
        else:
            await client.update_variable(VariableUpdate(name=name, value=paused))
        return f"campaign {self.campaign} {'paused' if paused else 'resumed'}"


class ActionRefused(Exception):
    """An action that does not apply to the episode's current state."""


def read_metrics(parameters: dict) -> tuple[dict | None, str | None]:
    """The episode's metrics file, when the flow-run parameters locate it and it exists locally."""
    from generate.models import metrics_path

    job, results_dir = parameters.get("job") or {}, parameters.get("results_dir")
    payload = job.get("payload") or {}
    if not results_dir or not payload.get("team_slug"):
        return None, None
    path = metrics_path(results_dir, payload["team_slug"], payload["task"], payload["instance_id"])
    try:
        return json.loads(Path(path).read_text()), str(path)
    except (OSError, ValueError):
        return None, str(path)
