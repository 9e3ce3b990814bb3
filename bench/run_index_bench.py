"""The pure part of an evaltui refresh at scale: `RunIndex.counts()` and `.rows()` over a
campaign of 50,000 jobs (3 % retried), and building the index (the first scan's adds).

    python bench/run_index_bench.py            # results in bench/tui.md ("Counting jobs")

No server: the index is filled the way `tui/queue.py` fills it from flow runs.
"""

from __future__ import annotations

import statistics
import time

from tui.run_index import RunIndex

BUCKETS = ["completed"] * 90 + ["failed"] * 4 + ["running", "waiting", "loading", "scheduled", "pending", "crashed"]
ACTIVE = {"running", "waiting", "loading", "scheduled", "pending"}


def build(teams: int = 50, tasks: int = 10, instances: int = 100) -> RunIndex:
    index, n = RunIndex(), 0
    for team in range(teams):
        for task in range(tasks):
            for i in range(instances):
                job, bucket = f"t{team}/k{task}/{i}", BUCKETS[(team * 7 + task * 13 + i) % len(BUCKETS)]
                index.add(f"r{n}", f"t{team}", f"k{task}", bucket, 1, False, bucket in ACTIVE, job_id=job)
                n += 1
                if i % 33 == 0:  # retried: a second attempt that completed
                    index.add(f"r{n}", f"t{team}", f"k{task}", "completed", 2, False, False, job_id=job)
                    n += 1
    return index


def median_ms(call, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    started = time.perf_counter()
    index = build()
    print(f"build (adds of the first scan): {len(index.runs):,} runs in {time.perf_counter() - started:.2f} s")
    plan = {(f"t{t}", f"k{k}"): 100 for t in range(50) for k in range(10)}
    print(f"counts(): median {median_ms(index.counts):.1f} ms")
    print(f"rows(plan): median {median_ms(lambda: index.rows(plan)):.1f} ms")


if __name__ == "__main__":
    main()
