"""Snapshots the dashboard renders: plain frozen dataclasses, no Prefect objects.

The data modules (`tui.queue`, `tui.pools`, `tui.logs`, `tui.detail`) build them from the Prefect API, `tui.aggregate` derives figures from
them, the widgets only display them. Tests feed widgets fixed instances. A pool's status
(`PoolStatus`, `ServerStatus`) is the pool-status service's own model (`flows/slots/pool_status.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from flows.results.metrics_files import PROVENANCE_KEY
from flows.slots.events import Holder  # noqa: F401  (part of the snapshots' vocabulary; no Prefect import)
from flows.slots.pool_status import PoolStatus, ServerStatus  # noqa: F401  (the pools snapshot's parts, shared with `evalq pools status`)
from flows.slots.waiting import WaitExplanation

ACTIVE_BUCKETS: tuple[str, ...] = ("scheduled", "pending", "loading", "waiting", "running")
"""Buckets of runs that have not ended yet."""
BUCKETS: tuple[str, ...] = (
    "scheduled", "pending", "loading", "waiting", "running", "completed", "failed", "crashed", "cancelled",
)
"""Queue state buckets, in the order a run moves through them."""

BUCKET_LABELS = {
    "scheduled": "scheduled",
    "pending": "pending",
    "loading": "loading sim",
    "waiting": "waiting for server",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "crashed": "crashed",
    "cancelled": "cancelled",
}


@dataclass(frozen=True)
class QueueSnapshot:
    """A campaign's episodes (jobs) counted by the state of their latest run, attempts apart."""

    campaign: str
    counts: dict[str, int]
    """Bucket -> jobs whose latest run is in it (`completed`: any run completed; `cancelled`
    also: failed after a cancel request)."""
    runs: int
    """All flow runs of the campaign."""
    dispatched: int
    """Jobs with at least one run."""
    planned: int | None
    """Jobs in the campaign, from its plan variable; None when the campaign did not say."""
    skipped: int = 0
    """Completed runs named `Skipped` (their jobs count in `completed`)."""
    paused: bool = False
    taken_at: datetime | None = None
    attempts: int = 0
    """Times episodes ran: one per run, one more per run rerun in place."""

    @property
    def total(self) -> int:
        """What progress is measured against: the plan, else the jobs dispatched."""
        return self.planned if self.planned is not None else self.dispatched

    @property
    def in_flight(self) -> int:
        return sum(self.counts.get(bucket, 0) for bucket in ACTIVE_BUCKETS)

    @property
    def finished(self) -> int:
        """Jobs settled: done, failed or cancelled."""
        return sum(self.counts.get(bucket, 0) for bucket in ("completed", "failed", "crashed", "cancelled"))

    @property
    def to_dispatch(self) -> int:
        """Planned jobs with no run yet."""
        return max(0, self.total - self.dispatched)

    @property
    def retries(self) -> int:
        """Attempts beyond each job's first."""
        return max(0, self.attempts - self.dispatched)

    @property
    def settled(self) -> bool:
        """Every job dispatched and no run still on its way: the campaign has nothing left to do."""
        return self.total > 0 and self.dispatched >= self.total and self.in_flight == 0


@dataclass(frozen=True)
class RowCounts:
    """One (team, task) row of the queue table, in jobs; attempts and retries apart."""

    team: str
    task: str
    total: int
    """Planned jobs (jobs with a run, without a plan)."""
    done: int = 0
    running: int = 0
    """Jobs in flight (scheduled to running)."""
    failed: int = 0
    """Jobs whose latest run failed or crashed."""
    cancelled: int = 0
    waiting: int = 0
    """Planned jobs not dispatched yet."""
    attempts: int = 0
    retries: int = 0


@dataclass(frozen=True)
class RowsPage:
    rows: list[RowCounts]
    page: int
    pages: int
    total_rows: int
    indexed: int = 0
    """Runs indexed so far."""
    complete: bool = True
    """False while the first scan of the campaign's runs is still going."""


@dataclass(frozen=True)
class EpisodeRow:
    """One episode flow run, as listed in tables."""

    id: UUID
    name: str
    team: str
    task: str
    state_type: str
    state_name: str
    attempt: int = 1
    pool: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    job_id: str = ""
    """`team/task/instance`, from the run's name (which also names the campaign)."""


@dataclass(frozen=True)
class EpisodesPage:
    team: str
    task: str
    episodes: list[EpisodeRow]
    page: int
    pages: int
    total: int


@dataclass(frozen=True)
class PoolsSnapshot:
    pools: list[PoolStatus]
    taken_at: datetime | None = None


@dataclass(frozen=True)
class LogLine:
    id: str
    timestamp: datetime
    level: int
    message: str
    flow_run_id: str | None
    episode: str = ""
    """The episode's job id (`team/task/instance`), when known."""
    team: str = ""
    task: str = ""


@dataclass(frozen=True)
class StateChange:
    timestamp: datetime
    type: str
    name: str
    message: str = ""


@dataclass(frozen=True)
class EpisodeDetail:
    """Everything the episode screen shows."""

    run: EpisodeRow
    parameters: dict[str, Any]
    states: list[StateChange]
    attempts: list[EpisodeRow]
    server: str | None
    logs: list[LogLine]
    metrics: dict[str, Any] | None
    metrics_path: str | None
    ui_url: str
    waiting: WaitExplanation | None = None
    """Why it does not play yet, while it is in flight and not playing."""

    @property
    def video(self) -> str | None:
        """The episode's video, as its metrics file records it (`evalq.video`)."""
        recorded = (self.metrics or {}).get(PROVENANCE_KEY)
        video = recorded.get("video") if isinstance(recorded, dict) else None
        return video if isinstance(video, str) else None
