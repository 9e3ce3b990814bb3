"""The local queue's start decision (`workpools/local/scheduling.py`): first in, first out, and
backfill only where it cannot delay the head. Pure function, no server."""

from __future__ import annotations

import pytest

from workpools.local.command import KILL_GRACE_SECONDS
from workpools.local.gpus import Gpu
from workpools.local.scheduling import Holding, Waiting, plan_starts

NOW = 1000.0


def idle(*indices: int) -> list[Gpu]:
    return [Gpu(index, 80000, 0) for index in indices]


def plan(queue, holding=(), gpus=None, leased=None, free_slots=100):
    gpus = idle(0, 1) if gpus is None else gpus
    leased = {index for held in holding for index in held.gpus} if leased is None else leased
    return plan_starts(list(queue), list(holding), gpus, leased, free_slots, NOW)


class TestFirstInFirstOut:
    def test_jobs_start_in_order_on_distinct_gpus(self):
        assert plan([Waiting("a", 1), Waiting("b", 1), Waiting("c", 1)]) == {"a": [0], "b": [1]}

    def test_a_later_one_gpu_job_does_not_overtake_a_waiting_two_gpu_job(self):
        """GPU 1 is free, but the head needs both and GPU 0's command may end any moment."""
        running = [Holding((0,), ends_by=None)]
        assert plan([Waiting("head", 2), Waiting("small", 1)], running) == {}

    def test_the_head_starts_once_both_gpus_are_free(self):
        assert plan([Waiting("head", 2), Waiting("small", 1)]) == {"head": [0, 1]}

    def test_zero_gpu_jobs_need_only_a_slot(self):
        running = [Holding((0,), ends_by=None)]
        assert plan([Waiting("head", 2), Waiting("cpu", 0)], running) == {"cpu": []}


class TestBackfill:
    def test_a_job_killed_before_the_heads_reservation_may_use_the_free_gpu(self):
        running = [Holding((0,), ends_by=NOW + 100)]
        fits = 100 - KILL_GRACE_SECONDS
        assert plan([Waiting("head", 2), Waiting("short", 1, timeout=fits)], running) == {"short": [1]}

    def test_a_job_that_could_outlive_the_reservation_waits(self):
        running = [Holding((0,), ends_by=NOW + 100)]
        too_long = 100 - KILL_GRACE_SECONDS + 1
        assert plan([Waiting("head", 2), Waiting("long", 1, timeout=too_long)], running) == {}
        assert plan([Waiting("head", 2), Waiting("endless", 1)], running) == {}

    def test_no_reservation_without_timeouts_means_no_backfill_even_for_short_jobs(self):
        running = [Holding((0,), ends_by=None)]
        assert plan([Waiting("head", 2), Waiting("short", 1, timeout=1)], running) == {}

    def test_gpus_the_head_will_not_need_are_open(self):
        """4 GPUs: 0 frees by +100, 1 never; the head (2) gets 0 and 2 at +100, so 3 is spare."""
        running = [Holding((0,), ends_by=NOW + 100), Holding((1,), ends_by=None)]
        queue = [Waiting("head", 3), Waiting("head2", 2), Waiting("small", 1)]
        assert plan(queue[:1] + queue[2:], running, gpus=idle(0, 1, 2, 3)) == {}  # head takes 0, 2, 3 at +100
        assert plan(queue[1:], running, gpus=idle(0, 1, 2, 3)) == {"head2": [2, 3]}
        blocked = [Waiting("head", 2), Waiting("small", 1)]
        running = [Holding((0,), ends_by=NOW + 100), Holding((1,), ends_by=None), Holding((2,), ends_by=None)]
        assert plan(blocked, running, gpus=idle(0, 1, 2, 3)) == {}  # head gets 0 and 3 at +100: 3 is reserved
        running = [Holding((0, 1), ends_by=NOW + 100), Holding((2,), ends_by=None)]
        assert plan([Waiting("head", 3), Waiting("small", 1)], running, gpus=idle(0, 1, 2, 3, 4)) == {"small": [4]}

    def test_a_pinned_head_leaves_other_gpus_open(self):
        running = [Holding((0,), ends_by=None)]
        assert plan([Waiting("pinned", 1, pinned=(0,)), Waiting("any", 1)], running) == {"any": [1]}

    def test_only_the_head_reserves(self):
        """EASY backfilling: the second blocked job does not hold anyone back; it waits its turn as head."""
        running = [Holding((0,), ends_by=NOW + 100)]
        queue = [Waiting("head", 2), Waiting("second", 2), Waiting("short", 1, timeout=10)]
        assert plan(queue, running) == {"short": [1]}


class TestSlots:
    def test_no_free_slot_no_start(self):
        assert plan([Waiting("a", 0), Waiting("b", 0)], free_slots=0) == {}
        assert plan([Waiting("a", 0), Waiting("b", 0)], free_slots=1) == {"a": []}

    def test_a_backfill_that_may_outlive_the_reservation_leaves_the_heads_slot(self):
        running = [Holding((0,), ends_by=None)]
        assert plan([Waiting("head", 2), Waiting("cpu", 0)], running, free_slots=1) == {}
        assert plan([Waiting("head", 2), Waiting("cpu", 0)], running, free_slots=2) == {"cpu": []}

    def test_a_head_waiting_for_a_slot_keeps_its_place(self):
        running = [Holding((0,), ends_by=None)]
        assert plan([Waiting("a", 1), Waiting("b", 0)], running, free_slots=0) == {}


class TestMemory:
    def test_a_gpu_busy_by_memory_is_not_offered(self):
        gpus = [Gpu(0, 80000, 60000), Gpu(1, 80000, 0)]
        assert plan([Waiting("a", 1)], gpus=gpus) == {"a": [1]}
        assert plan([Waiting("a", 1), Waiting("b", 1)], gpus=gpus) == {"a": [1]}

    def test_each_job_has_its_own_threshold(self):
        gpus = [Gpu(0, 80000, 40000)]
        assert plan([Waiting("strict", 1, free_threshold=0.9)], gpus=gpus) == {}
        assert plan([Waiting("lenient", 1, free_threshold=0.4)], gpus=gpus) == {"lenient": [0]}

    def test_a_gpu_used_outside_the_queue_blocks_the_head_without_backfill(self):
        """Someone else's process on GPU 0: nothing says when it ends, so GPU 1 waits for the head."""
        gpus = [Gpu(0, 80000, 70000), Gpu(1, 80000, 0)]
        assert plan([Waiting("head", 2), Waiting("small", 1, timeout=5)], gpus=gpus) == {}


def simulate(arrivals: list[tuple[float, Waiting, float]], gpus: int, until: float, step: float = 1.0) -> dict[str, float]:
    """Start times of jobs (arrival time, job, run seconds) when each tick runs the plan."""
    arrivals = sorted(arrivals, key=lambda arrival: arrival[0])  # queue order is arrival order
    now, running, started = 0.0, [], {}
    while now <= until:
        running = [(key, held, end) for key, held, end in running if end > now]
        queue = [job for at, job, _ in arrivals if at <= now and job.key not in started]
        holding = [held for _, held, _ in running]
        leased = {index for held in holding for index in held.gpus}
        for key, chosen in plan_starts(queue, holding, idle(*range(gpus)), leased, 100, now).items():
            seconds = next(run for _, job, run in arrivals if job.key == key)
            job = next(job for _, job, _ in arrivals if job.key == key)
            ends_by = None if job.timeout is None else now + job.timeout + KILL_GRACE_SECONDS
            running.append((key, Holding(tuple(chosen), ends_by), now + seconds))
            started[key] = now
        now += step
    return started


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_stream_of_one_gpu_jobs_does_not_starve_a_two_gpu_job(timeout):
    """A 1-GPU job arrives every 5 s (each runs 8 s), so one GPU is nearly always busy; without the
    reservation the 2-GPU job would wait for ever. It starts once the jobs ahead of it end, and
    no 1-GPU job that came after it starts before it."""
    stream = [(5.0 * n, Waiting(f"small{n:02d}", 1, timeout=timeout), 8.0) for n in range(40)]
    big = (11.0, Waiting("big", 2, timeout=timeout), 8.0)
    started = simulate(stream + [big], gpus=2, until=400)
    assert "big" in started
    later = [job.key for at, job, _ in stream if at > big[0]]
    assert all(started[key] >= started["big"] + 8 for key in later if key in started)
    assert started["big"] <= 11.0 + 8 + 1  # the jobs ahead of it run at most 8 s


class TestVisibleDevices:
    """TS_VISIBLE_DEVICES / EVALQ_VISIBLE_DEVICES at submit: the only GPUs a job may be given."""

    def test_a_job_gets_only_visible_gpus(self):
        assert plan([Waiting("a", 1, visible=(1,)), Waiting("b", 1)]) == {"a": [1], "b": [0]}

    def test_a_job_waits_rather_than_take_an_invisible_gpu(self):
        running = [Holding((1,), ends_by=None)]
        assert plan([Waiting("a", 1, visible=(1,))], running) == {}
        assert plan([Waiting("a", 2, visible=(0, 1)), Waiting("b", 1, visible=(2,))], gpus=idle(0, 1, 2),
                    holding=running) == {"b": [2]}  # the head can only use 0 and 1: GPU 2 stays open

    def test_the_head_reserves_only_gpus_it_may_use(self):
        """Head limited to GPU 1 (busy until +100): GPU 0 is not the head's, so an endless job may take it."""
        running = [Holding((1,), ends_by=NOW + 100)]
        assert plan([Waiting("head", 1, visible=(1,)), Waiting("endless", 1)], running) == {"endless": [0]}


class TestFreeThreshold:
    def test_the_threshold_decides_which_gpus_count_as_free(self):
        """`evalq queue gpu-free-threshold 0.8` (or the job's own): 15 % used is free at 0.8, not at 0.9."""
        gpus = [Gpu(0, 80000, 12000), Gpu(1, 80000, 40000)]
        assert plan([Waiting("a", 1, free_threshold=0.9)], gpus=gpus) == {}
        assert plan([Waiting("a", 1, free_threshold=0.8)], gpus=gpus) == {"a": [0]}
        assert plan([Waiting("a", 1, free_threshold=0.5)], gpus=gpus, leased={0}) == {"a": [1]}
