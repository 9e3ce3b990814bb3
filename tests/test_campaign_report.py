"""`evalq campaign report`'s grouping, from hand-made run records (pure)."""

import dataclasses
import datetime as dt
from types import SimpleNamespace

from prefect.client.schemas.objects import StateType

from flows.campaign.history import EpisodeRecord
from flows.campaign.run_history import attempt_ends, cancel_in_last_attempt
from flows.reports.report import build_report, report_text

DEAD = "Failed: Flow run encountered an exception: ServerUnavailable: policy server 127.0.0.1:9 unavailable"


def run(job_id, attempt, state_type, message="", pool="a_1", run_id=None):
    name = {StateType.FAILED: "Failed", StateType.CRASHED: "Crashed"}.get(state_type, state_type.value.title())
    return EpisodeRecord(run_id=run_id or f"{job_id}@{attempt}", job_id=job_id, attempt=attempt, pool=pool,
                         state_type=state_type, state_name=name, message=message)


def test_report_groups_failures_by_reason_pool_and_server():
    dead_message = DEAD.removeprefix("Failed: ")
    records = [
        run("a/pick/1", 1, StateType.FAILED, dead_message), run("a/pick/1", 2, StateType.FAILED, dead_message),
        run("a/pick/2", 1, StateType.FAILED, dead_message),
        run("a/pick/3", 1, StateType.FAILED, dead_message), run("a/pick/3", 2, StateType.COMPLETED),
        run("b/open/1", 1, StateType.CRASHED, "No heartbeat", pool="b_1"),
        run("b/open/2", 1, StateType.CANCELLED, "by hand", pool="b_1"),
        dataclasses.replace(run("b/open/3", 1, StateType.CRASHED, "Execution was cancelled by the runtime environment.",
                                pool="b_1"), cancel_requested=True),
        run("b/open/4", 1, StateType.RUNNING, pool="b_1"),
        run("b/open/5", 1, StateType.FAILED, "boom", pool="b_1"),  # its metrics exist after all
    ]
    servers = {run_id: [(None, address)] for run_id, address in (
        ("a/pick/1@1", "127.0.0.1:9"), ("a/pick/1@2", "127.0.0.1:9"), ("a/pick/2@1", "127.0.0.1:9"),
        ("a/pick/3@1", "127.0.0.1:9"), ("b/open/1@1", "127.0.0.1:7"))}
    report = build_report("c", records, done_ids={"b/open/5"}, servers=servers, planned=12)
    assert (report.done, report.failed, report.cancelled, report.in_flight, report.runs) == (2, 3, 2, 1, 10)
    assert (report.attempts, report.retries, report.waiting) == (10, 2, 4)  # 8 jobs ran, 4 of 12 not yet
    assert report.running and report.planned == 12
    assert [(g.reason, g.count, g.examples) for g in report.reasons] == [
        (DEAD, 2, ["a/pick/1", "a/pick/2"]), ("Crashed: No heartbeat", 1, ["b/open/1"])]
    assert report.resubmit == ["a/pick/1", "a/pick/2", "b/open/1"]
    assert report.cancelled_ids == ["b/open/2", "b/open/3"] and report.in_flight_ids == ["b/open/4"]
    pools = {p.name: p for p in report.pools}
    assert pools["a_1"].failed_attempts == 4 and pools["a_1"].jobs == ["a/pick/1", "a/pick/2", "a/pick/3"]
    assert pools["b_1"].failed_attempts == 2  # the heartbeat crash and the failure; cancels are not failures
    assert [(s.name, s.failed_attempts) for s in report.servers] == [("127.0.0.1:9", 4), ("127.0.0.1:7", 1)]
    text = report_text(report)
    assert "episodes 2 done, 3 failed, 2 cancelled, 1 in flight, 4 waiting, of 12 planned; 10 attempts (2 retries)" in text
    assert "127.0.0.1:9: 4 failed attempts, 3 jobs" in text
    assert text.rstrip().endswith("b/open/1")


def test_long_reasons_are_cut_and_a_quiet_campaign_is_not_running():
    records = [run("a/pick/1", 1, StateType.FAILED, "x" * 1000), run("a/pick/2", 1, StateType.COMPLETED)]
    report = build_report("c", records, done_ids=set(), servers={})
    assert not report.running and report.done == 1
    assert len(report.reasons[0].reason) == 300 and report.reasons[0].reason.endswith("...")
    assert report.servers == []


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def state(minute: int, kind: StateType, name: str | None = None, message: str = ""):
    return SimpleNamespace(type=kind, name=name or kind.value.title(), message=message, timestamp=T0 + dt.timedelta(minutes=minute))


def test_a_run_rerun_in_place_keeps_each_failed_attempt_on_the_server_it_held():
    """The Prefect UI's Retry sets the same run Scheduled again: its history holds both ends."""
    history = [state(0, StateType.SCHEDULED), state(1, StateType.RUNNING, "Running"), state(2, StateType.FAILED, message="dead server"),
               state(10, StateType.SCHEDULED, "AwaitingRetry", "Retry from the UI"), state(11, StateType.PENDING),
               state(12, StateType.RUNNING, "Running"), state(13, StateType.COMPLETED)]
    ends = attempt_ends(history)
    assert [(e.state_type, e.failed, e.started) for e in ends] == [
        (StateType.FAILED, True, None), (StateType.COMPLETED, False, T0 + dt.timedelta(minutes=10))]
    record = dataclasses.replace(run("a/pick/1", 1, StateType.COMPLETED), ends=tuple(ends), rerun_in_place=True)
    leases = {"a/pick/1@1": [(T0 + dt.timedelta(minutes=1), "10.0.0.1:9"), (T0 + dt.timedelta(minutes=12), "10.0.0.2:9")]}
    report = build_report("c", [record], done_ids=set(), servers=leases, planned=1)
    assert (report.done, report.failed, report.runs, report.attempts, report.retries) == (1, 0, 1, 2, 1)
    assert [(p.name, p.failed_attempts) for p in report.pools] == [("a_1", 1)]
    assert [(s.name, s.failed_attempts) for s in report.servers] == [("10.0.0.1:9", 1)]
    assert "2 attempts (1 retries) in 1 episode runs, 1 of them reruns in place" in report_text(report)


def test_a_cancel_belongs_to_the_attempt_it_was_asked_for():
    cancelled_then_rerun = [state(0, StateType.RUNNING), state(1, StateType.CANCELLING), state(2, StateType.CRASHED),
                            state(3, StateType.FAILED), state(9, StateType.SCHEDULED, "AwaitingRetry"), state(10, StateType.RUNNING),
                            state(11, StateType.FAILED, message="boom")]
    ends = attempt_ends(cancelled_then_rerun)
    assert [(e.state_name, e.cancel_requested, e.failed) for e in ends] == [("Failed", True, False), ("Failed", False, True)]
    assert not cancel_in_last_attempt(cancelled_then_rerun)
    assert cancel_in_last_attempt(cancelled_then_rerun[:4])
    assert cancel_in_last_attempt(cancelled_then_rerun + [state(12, StateType.SCHEDULED), state(13, StateType.CANCELLING)])


def test_jobs_count_by_their_latest_run_and_a_cancel_asked_for_counts_cancelled():
    from collections import Counter

    from flows.reports.jobs import JobCounts, jobs_by_state

    failed, done, crashed, waiting = ("FAILED", "Failed"), ("COMPLETED", "Completed"), ("CRASHED", "Crashed"), ("RUNNING", "WaitingForServer")
    runs = Counter({done: 3, failed: 3, crashed: 1, waiting: 1, ("CANCELLED", "Cancelled"): 1})
    retried = {"a/pick/1": [(1, failed), (2, done)],  # failed once, then done
               "a/pick/2": [(1, crashed), (2, failed), (3, waiting)],  # in flight again
               "a/pick/3": [(1, ("CANCELLED", "Cancelled")), (2, done)]}  # cancelled, then brought back with --only
    jobs = jobs_by_state(runs, retried, asked_to_cancel=Counter({failed: 1}))  # one latest failure was a cancel
    counts = JobCounts(by_state=dict(jobs), runs=9, attempts=10, retries=10 - sum(jobs.values()), planned=8)
    assert (counts.done, counts.failed, counts.cancelled, counts.in_flight, counts.waiting) == (3, 0, 1, 1, 3)
    assert (counts.jobs, counts.retries) == (5, 5)
