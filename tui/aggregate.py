"""Pure functions from raw API answers and past snapshots to what the panels show.

No I/O here: slot holders from events, rate and ETA from successive counts,
utilization history, log filtering, and text forms of durations and sparklines.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from tui.models import LogLine

SPARK = "▁▂▃▄▅▆▇█"
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def bucket_of(state_type: str, state_name: str) -> str:
    """The queue bucket of a flow-run state (see `tui.models.BUCKETS`)."""
    from flows import naming

    kind = state_type.lower()
    if kind == "running":
        return {naming.LOADING_STATE: "loading", naming.WAITING_STATE: "waiting"}.get(state_name, "running")
    if kind in ("cancelling", "cancelled"):
        return "cancelled"
    if kind == "paused":
        return "pending"
    return kind


@dataclass
class Throughput:
    """Completed-episode rate over a sliding window of (time, completed) samples."""

    window: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        self.samples: deque[tuple[datetime, int]] = deque()

    def add(self, at: datetime, done: int) -> None:
        self.samples.append((at, done))
        while len(self.samples) > 2 and at - self.samples[0][0] > self.window:
            self.samples.popleft()

    def per_minute(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        seconds = (t1 - t0).total_seconds()
        if seconds <= 0:
            return None
        return max(0.0, (d1 - d0) * 60.0 / seconds)

    def eta(self, remaining: int) -> timedelta | None:
        rate = self.per_minute()
        if remaining <= 0:
            return timedelta(0)
        if not rate:
            return None
        return timedelta(minutes=remaining / rate)


class History:
    """Bounded utilization history (0..1 fractions) per key, for sparklines."""

    def __init__(self, length: int = 60):
        self.length = length
        self.values: dict[str, deque[float]] = {}

    def add(self, key: str, busy: int, capacity: int) -> None:
        self.values.setdefault(key, deque(maxlen=self.length)).append(busy / capacity if capacity else 0.0)

    def get(self, key: str) -> list[float]:
        return list(self.values.get(key, ()))


def sparkline(values: list[float], width: int) -> str:
    """The last `width` fractions as block characters, left-padded with spaces."""
    values = values[-width:]
    text = "".join(SPARK[min(len(SPARK) - 1, max(0, round(v * (len(SPARK) - 1))))] for v in values)
    return text.rjust(width)


def duration(delta: timedelta | None) -> str:
    """`3h 05m`, `4m 10s`, `12s`, or `-` when unknown."""
    if delta is None:
        return "-"
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass(frozen=True)
class LogQuery:
    """What the log panel shows: a minimum level and words to match in team, task, episode or text."""

    level: int = 0
    text: str = ""

    def matches(self, line: LogLine) -> bool:
        if line.level < self.level:
            return False
        for word in self.text.lower().split():
            key, sep, value = word.partition(":")
            if sep and key in ("team", "task", "episode"):
                if value not in getattr(line, key).lower():
                    return False
            elif word not in line.message.lower() and word not in line.episode.lower():
                return False
        return True


def level_name(level: int) -> str:
    for name, value in sorted(LEVELS.items(), key=lambda item: -item[1]):
        if level >= value:
            return name
    return "DEBUG"


def pages(total: int, size: int) -> int:
    return max(1, -(-total // size))


ACTIVE_TYPES = frozenset({"SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"})
"""State types a run can leave without a new start or end time: re-read while in them."""
