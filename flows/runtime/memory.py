"""How much memory a process uses with its children, and the peak while each episode ran.

Read from `/proc` (Linux; elsewhere every reading is None and nothing is recorded):
- `rss_mb()`: the resident memory of this process plus its descendants (their VmRSS) now: what
  `evalq runner --max-memory` compares with its limit before each claim.
- `PEAKS` samples this process every `SAMPLE_SECONDS` while episodes run: VmHWM, the peak since
  the last sample, then resets it (`/proc/self/clear_refs` 5, Linux >= 4.0), so a spike
  between two samples still counts; its descendants' VmRSS is added as sampled. Each episode in
  flight during an interval keeps the largest such peak (`EpisodeMemory`).

Limits, said in the metrics' `evalq` block too: the peak is the *process's* while the episode
ran, shared with the `concurrent_max` episodes in flight at that moment: an upper bound for one
episode; `peak_rss_mb - rss_at_start_mb` is a rough share. In-process evaluators share one heap
and CPython seldom gives freed memory back, so later episodes inherit earlier ones' peaks.
Children (a `command:` evaluator) are sampled, so a spike shorter than a sample is missed. Where
the peak cannot be reset, the samples' VmRSS is used instead (spikes between samples missed).
Only this sampler resets the peak.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.5
PROC = Path("/proc")


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def descendants(pid: int | str = "self") -> list[int]:
    """Every live descendant of `pid` (from each of its threads' `children` lists)."""
    found, stack = [], [str(pid)]
    while stack:
        current = stack.pop()
        try:
            tasks = list((PROC / current / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found += map(int, children)
            stack += children
    return found


def children_rss_kib(pid: int | str = "self") -> int:
    return sum(_status_kib(child, "VmRSS") or 0 for child in descendants(pid))


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of the process and its descendants now, in MiB; None off Linux."""
    own = _status_kib(pid, "VmRSS")
    return None if own is None else (own + children_rss_kib(pid)) / 1024


CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
"""cgroup v2, then v1: the memory this process's job (SLURM, Kubernetes) may use."""


def cgroup_limit_mb() -> float | None:
    """This process's cgroup memory limit in MiB; None when there is none (or it is unreadable)."""
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max", or v1's "unlimited" (a huge number)
            return int(text) / 2**20
        return None
    return None


def _reset_peak() -> bool:
    try:
        (PROC / "self" / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class EpisodeMemory:
    """What one episode saw of its process's memory, in MiB."""

    rss_at_start_mb: float
    peak_rss_mb: float
    concurrent_max: int = 1
    """Episodes in flight in the process when its peak was sampled (the peak is theirs too)."""


class PeakSampler:
    """One thread per process that samples the peak while episodes are tracked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._episodes: dict[object, EpisodeMemory] = {}
        self._wake = threading.Condition(self._lock)
        self._pid: int | None = None
        self._resettable = False

    def track(self, key: object) -> None:
        """Start recording an episode's peak (no-op off Linux)."""
        now = rss_mb()
        if now is None:
            return
        with self._lock:
            self._ensure_thread()
            self._episodes[key] = EpisodeMemory(rss_at_start_mb=round(now, 1), peak_rss_mb=round(now, 1),
                                                 concurrent_max=len(self._episodes) + 1)
            self._wake.notify()

    @contextlib.contextmanager
    def tracking(self):
        """`track` a new key for the duration; yields the key (`finish` it to read its figures)."""
        key = object()
        self.track(key)
        try:
            yield key
        finally:
            self.finish(key)

    def finish(self, key: object) -> EpisodeMemory | None:
        """Stop recording; the episode's figures (after one last sample), None if not tracked."""
        self.sample()
        with self._lock:
            return self._episodes.pop(key, None)

    def sample(self) -> None:
        """Read the peak since the last sample (reset it) and credit it to every episode in flight."""
        with self._lock:
            if not self._episodes:
                return
            hwm = _status_kib("self", "VmHWM") if self._resettable else None
            if hwm is not None:
                self._resettable = _reset_peak()
            own = hwm if hwm is not None else _status_kib("self", "VmRSS")
            if own is None:
                return
            peak = round((own + children_rss_kib()) / 1024, 1)
            for memory in self._episodes.values():
                if peak > memory.peak_rss_mb:
                    memory.peak_rss_mb, memory.concurrent_max = peak, len(self._episodes)

    def _ensure_thread(self) -> None:
        """Start the sampler in this process (again in a forked child: threads do not survive fork)."""
        if self._pid == os.getpid():
            return
        self._pid, self._episodes, self._resettable = os.getpid(), {}, _reset_peak()
        threading.Thread(target=self._run, name="evalq-memory", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._episodes:
                    self._wake.wait()
                self._wake.wait(SAMPLE_SECONDS)
            self.sample()


PEAKS = PeakSampler()
"""This process's sampler: episodes `track` themselves when they start and `finish` when they end."""
