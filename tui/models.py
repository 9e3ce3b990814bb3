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
    """A campaign's episode flow runs counted by state."""

    campaign: str
    counts: dict[str, int]
    """Bucket -> number of flow runs (every attempt counts)."""
    runs: int
    """All flow runs of the campaign."""
    dispatched: int
    """Jobs dispatched so far (runs of attempt 1)."""
    planned: int | None
    """Jobs in the campaign, from its plan variable; None when the campaign did not say."""
    skipped: int = 0
    """Completed runs named `Skipped` (included in `completed`)."""
    paused: bool = False
    taken_at: datetime | None = None

    @property
    def total(self) -> int:
        """What progress is measured against: the plan, else the jobs dispatched."""
        return self.planned if self.planned is not None else self.dispatched

    @property
    def settled(self) -> bool:
        """Every job dispatched and no run still on its way: the campaign has nothing left to do."""
        active = sum(self.counts.get(bucket, 0) for bucket in ACTIVE_BUCKETS)
        return self.total > 0 and self.dispatched >= self.total and active == 0


@dataclass(frozen=True)
class RowCounts:
    """One (team, task) row of the queue table."""

    team: str
    task: str
    total: int
    """Flow runs of this team and task (every attempt)."""
    done: int = 0
    running: int = 0
    failed: int = 0
    """Failed or crashed runs."""


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
    """The episode's flow-run name (`team/task/instance`), when known."""
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
