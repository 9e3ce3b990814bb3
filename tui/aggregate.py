"""Pure functions from raw API answers and past snapshots to what the panels show.

No I/O here: slot holders from events, rate and ETA from successive counts,
utilization history, log filtering, and text forms of durations and sparklines.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from tui.models import ACTIVE_BUCKETS, LogLine

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


class IndexedRun(NamedTuple):
    team: str
    task: str
    bucket: str
    job_id: str
    attempt: int
    skipped: bool
    rerun: bool = False
    """Tagged `evalq-rerun`: started again after it had ended (one attempt more)."""
    state_id: str = ""


FAILED_BUCKETS = ("failed", "crashed")


class RunIndex:
    """Every episode run of a campaign as (team, task, bucket, job, attempt, ...): the source
    of the team x task table and, once scanned, of the queue's counts, both in jobs.

    `tui.queue.QueueReads.sync_index` fills it by a keyset scan over expected start times,
    then keeps it current with small reads (runs started or ended since the last sync, and
    the runs in an active state, few under just-in-time dispatch), so a refresh costs a few
    requests whatever the campaign's size. `active` holds the ids of runs in an active state;
    `cancel_asked` whether a failed run was asked to cancel (checked once per end).
    """

    def __init__(self) -> None:
        self.runs: dict[str, IndexedRun] = {}
        self.active: set[str] = set()
        self.cancel_asked: dict[str, tuple[str, bool]] = {}
        """Run id -> (the state id checked, whether its attempt went through Cancelling)."""
        self.cursor: datetime | None = None
        """Expected start time the scan has reached."""
        self.scanned = False
        """True once the first full scan is done."""
        self.synced_at: datetime | None = None

    def add(self, run_id: str, team: str, task: str, bucket: str, attempt: int = 1, skipped: bool = False, active: bool = False,
            job_id: str = "", rerun: bool = False, state_id: str = "") -> None:
        self.runs[run_id] = IndexedRun(team, task, bucket, job_id or run_id, attempt, skipped, rerun, state_id)
        if active:
            self.active.add(run_id)
        else:
            self.active.discard(run_id)

    def latest_runs(self) -> dict[str, tuple[str, IndexedRun, bool]]:
        """Job id -> (its latest run's id, that run, whether any of its runs completed)."""
        latest: dict[str, tuple[str, IndexedRun, bool]] = {}
        for run_id, run in self.runs.items():
            seen = latest.get(run.job_id)
            done = run.bucket == "completed"
            if seen is None:
                latest[run.job_id] = (run_id, run, done)
            elif run.attempt > seen[1].attempt:
                latest[run.job_id] = (run_id, run, done or seen[2])
            elif done and not seen[2]:
                latest[run.job_id] = (*seen[:2], True)
        return latest

    def unchecked_failures(self) -> list[str]:
        """Latest runs of jobs that failed and were not checked for a cancel request at this end."""
        return [run_id for run_id, run, done in self.latest_runs().values()
                if not done and run.bucket in FAILED_BUCKETS and self.cancel_asked.get(run_id, ("", False))[0] != run.state_id]

    def job_bucket(self, run_id: str, run: IndexedRun, done: bool) -> str:
        """What a job counts as: completed if any run completed, cancelled if its latest failed
        after a cancel request, else its latest run's bucket."""
        if done:
            return "completed"
        if run.bucket in FAILED_BUCKETS and self.cancel_asked.get(run_id, ("", False)) == (run.state_id, True):
            return "cancelled"
        return run.bucket

    def counts(self) -> tuple[dict[str, int], int, int, int, int]:
        """(jobs per bucket, runs, attempts, jobs with a run, skipped runs), as the queue shows them."""
        from tui.models import BUCKETS

        buckets = dict.fromkeys(BUCKETS, 0)
        latest = self.latest_runs()
        for run_id, run, done in latest.values():
            bucket = self.job_bucket(run_id, run, done)
            buckets[bucket] = buckets.get(bucket, 0) + 1
        reruns = sum(run.rerun for run in self.runs.values())
        skipped = sum(run.skipped for run in self.runs.values())
        return buckets, len(self.runs), len(self.runs) + reruns, len(latest), skipped

    def rows(self, plan: dict[tuple[str, str], int] | None = None) -> list:
        """Jobs done / failed / cancelled / in flight / waiting, attempts and retries, per (team,
        task), sorted. With the campaign's plan every planned (team, task) has a row from the
        start, its total what is planned; without, the total counts the jobs with a run."""
        from tui.models import RowCounts

        jobs: dict[tuple[str, str], Counter] = {key: Counter() for key in plan or {}}
        for run_id, run, done in self.latest_runs().values():
            counts = jobs.setdefault((run.team, run.task), Counter())
            counts[self.job_bucket(run_id, run, done)] += 1
            counts["jobs"] += 1
        for run in self.runs.values():
            jobs.setdefault((run.team, run.task), Counter())["attempts"] += 1 + run.rerun
        rows = []
        for (team, task), c in sorted(jobs.items()):
            total = (plan or {}).get((team, task), c["jobs"])
            rows.append(RowCounts(
                team, task, total, done=c["completed"], running=sum(c[b] for b in ACTIVE_BUCKETS),
                failed=c["failed"] + c["crashed"], cancelled=c["cancelled"], waiting=max(0, total - c["jobs"]),
                attempts=c["attempts"], retries=c["attempts"] - c["jobs"],
            ))
        return rows
