"""`evalq campaign report`'s grouping, from hand-made run records (pure)."""

import dataclasses

from prefect.client.schemas.objects import StateType

from flows.reports.report import build_report, report_text
from flows.campaign.history import EpisodeRecord

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
    servers = {"a/pick/1@1": "127.0.0.1:9", "a/pick/1@2": "127.0.0.1:9", "a/pick/2@1": "127.0.0.1:9",
               "a/pick/3@1": "127.0.0.1:9", "b/open/1@1": "127.0.0.1:7"}
    report = build_report("c", records, done_ids={"b/open/5"}, servers=servers, planned=12)
    assert (report.done, report.failed, report.cancelled, report.in_flight, report.runs) == (2, 3, 2, 1, 10)
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
    assert "3 failed, 2 cancelled, 1 in flight of 12 planned" in text
    assert "127.0.0.1:9: 4 failed attempts, 3 jobs" in text
    assert text.rstrip().endswith("b/open/1")


def test_long_reasons_are_cut_and_a_quiet_campaign_is_not_running():
    records = [run("a/pick/1", 1, StateType.FAILED, "x" * 1000), run("a/pick/2", 1, StateType.COMPLETED)]
    report = build_report("c", records, done_ids=set(), servers={})
    assert not report.running and report.done == 1
    assert len(report.reasons[0].reason) == 300 and report.reasons[0].reason.endswith("...")
    assert report.servers == []
