"""The run index: every episode run of a campaign, and its jobs counted as they change. Pure.

`tui.queue.QueueReads.sync_index` fills it by a keyset scan over expected start times, then
keeps it current with small reads (runs started or ended since the last sync, and the runs in
an active state, few under just-in-time dispatch), so a refresh costs a few requests whatever
the campaign's size. The team x task table and, once scanned, the queue's counts come from
it, in jobs: a job counts once, by its latest run (the highest attempt), as done when any of
its runs completed and as cancelled when its latest failed after a cancel request.

The counts are kept up to date as runs are added, not recounted: a refresh of a 50,000-run
campaign touches the few runs that changed and their jobs only.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import NamedTuple

from tui.models import ACTIVE_BUCKETS, BUCKETS, RowCounts

FAILED_BUCKETS = ("failed", "crashed")


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

    @property
    def attempts(self) -> int:
        return 1 + self.rerun


class RunIndex:
    """Runs by id, and per job, per (team, task) and overall the counts the queue shows.

    `active` holds the ids of runs in an active state; `cancel_asked` whether a failed run's
    attempt went through Cancelling (checked once per end, `record_cancel`)."""

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
        self.job_runs: dict[str, set[str]] = {}
        self.job_bucket: dict[str, str] = {}
        self.job_latest: dict[str, str] = {}
        """Job id -> its latest run's id."""
        self.buckets: Counter = Counter()
        """Jobs per bucket."""
        self.row_counts: dict[tuple[str, str], Counter] = {}
        """(team, task) -> jobs per bucket, plus "jobs" and "attempts"."""
        self.attempts = 0
        self.skipped = 0

    def add(self, run_id: str, team: str, task: str, bucket: str, attempt: int = 1, skipped: bool = False, active: bool = False,
            job_id: str = "", rerun: bool = False, state_id: str = "") -> None:
        """Add a run, or update it; its job's counts follow."""
        run = IndexedRun(team, task, bucket, job_id or run_id, attempt, skipped, rerun, state_id)
        old = self.runs.get(run_id)
        self.runs[run_id] = run
        if active:
            self.active.add(run_id)
        else:
            self.active.discard(run_id)
        if old == run:
            return
        row = self.row_counts.setdefault((team, task), Counter())
        grown = run.attempts - (old.attempts if old else 0)
        self.attempts += grown
        row["attempts"] += grown
        self.skipped += run.skipped - (old.skipped if old else False)
        self.job_runs.setdefault(run.job_id, set()).add(run_id)
        self._count_job(run.job_id)

    def record_cancel(self, run_id: str, state_id: str, asked: bool) -> None:
        """Whether the run's attempt that ended in `state_id` went through Cancelling."""
        self.cancel_asked[run_id] = (state_id, asked)
        if run_id in self.runs:
            self._count_job(self.runs[run_id].job_id)

    def _count_job(self, job_id: str) -> None:
        """Recount one job: its latest run (the highest attempt) and whether any run completed."""
        runs = [(self.runs[run_id].attempt, run_id) for run_id in self.job_runs[job_id]]
        _, latest_id = max(runs)
        latest = self.runs[latest_id]
        done = any(self.runs[run_id].bucket == "completed" for _, run_id in runs)
        if done:
            bucket = "completed"
        elif latest.bucket in FAILED_BUCKETS and self.cancel_asked.get(latest_id) == (latest.state_id, True):
            bucket = "cancelled"
        else:
            bucket = latest.bucket
        self.job_latest[job_id] = latest_id
        old = self.job_bucket.get(job_id)
        if old == bucket:
            return
        row = self.row_counts.setdefault((latest.team, latest.task), Counter())
        if old is None:
            row["jobs"] += 1
        else:
            self.buckets[old] -= 1
            row[old] -= 1
        self.buckets[bucket] += 1
        row[bucket] += 1
        self.job_bucket[job_id] = bucket

    def unchecked_failures(self) -> list[str]:
        """Latest runs of jobs that failed, not checked for a cancel request at this end."""
        found = []
        for job_id, bucket in self.job_bucket.items():
            if bucket in FAILED_BUCKETS:
                run_id = self.job_latest[job_id]
                if self.cancel_asked.get(run_id, ("", False))[0] != self.runs[run_id].state_id:
                    found.append(run_id)
        return found

    def counts(self) -> tuple[dict[str, int], int, int, int, int]:
        """(jobs per bucket, runs, attempts, jobs with a run, skipped runs), as the queue shows them."""
        buckets = {bucket: self.buckets.get(bucket, 0) for bucket in BUCKETS}
        return buckets, len(self.runs), self.attempts, len(self.job_bucket), self.skipped

    def rows(self, plan: dict[tuple[str, str], int] | None = None) -> list[RowCounts]:
        """Jobs done / failed / cancelled / in flight / waiting, attempts and retries, per (team,
        task), sorted. With the campaign's plan every planned (team, task) has a row from the
        start, its total what is planned; without, the total counts the jobs with a run."""
        keys = set(self.row_counts) | set(plan or {})
        rows = []
        for team, task in sorted(keys):
            c = self.row_counts.get((team, task), Counter())
            total = (plan or {}).get((team, task), c["jobs"])
            rows.append(RowCounts(
                team, task, total, done=c["completed"], running=sum(c[b] for b in ACTIVE_BUCKETS),
                failed=c["failed"] + c["crashed"], cancelled=c["cancelled"], waiting=max(0, total - c["jobs"]),
                attempts=c["attempts"], retries=c["attempts"] - c["jobs"],
            ))
        return rows
