"""The grading service's pure parts: placement, the argv template, tokens, results files,
and the command runner's kill of a whole process group."""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flows.grader.auth import hash_token, load_tokens
from flows.grader.command import is_overdue, render_argv, split_template, timeout_for
from flows.grader.execution import run_watched
from flows.grader.placement import ActiveJob, choose_node, node_loads, queue_position
from flows.grader.store import results_name, save_results, user_slug, work_dir
from generate.errors import InputError

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def job(job_id: str, node: str, expected: float, minute: int = 0, pending: bool = True) -> ActiveJob:
    return ActiveJob(job_id, node, expected, T0 + timedelta(minutes=minute), pending)


class TestPlacement:
    def test_least_expected_work_wins_not_fewest_jobs(self):
        active = [job("a", "n0", 100, pending=False), job("b", "n1", 10), job("c", "n1", 20)]
        loads = node_loads(["n0", "n1"], active)
        assert (loads["n0"].queue_length, loads["n0"].total_wait_time) == (1, 100)
        assert (loads["n1"].queue_length, loads["n1"].total_wait_time) == (2, 30)
        assert choose_node(loads) == "n1"

    def test_ties_go_to_the_shorter_queue_then_the_first_node(self):
        assert choose_node(node_loads(["n0", "n1"], [job("a", "n0", 5), job("b", "n0", 5), job("c", "n1", 10)])) == "n1"
        assert choose_node(node_loads(["n0", "n1", "n2"], [job("a", "n0", 5), job("b", "n1", 5)])) == "n2"
        assert choose_node(node_loads(["n0", "n1"], [])) == "n0"

    def test_jobs_on_unknown_nodes_do_not_count_and_no_nodes_is_an_error(self):
        assert node_loads(["n0"], [job("a", "gone", 5)])["n0"].queue_length == 0
        with pytest.raises(ValueError):
            choose_node({})

    def test_queue_position_counts_pending_jobs_ahead_on_the_same_node(self):
        active = [job("run", "n0", 5, 0, pending=False), job("b", "n0", 5, 2), job("a", "n0", 5, 1), job("x", "n1", 5, 0)]
        assert [queue_position(j, "n0", active) for j in ("a", "b", "run")] == [1, 2, None]
        assert queue_position("x", "n1", active) == 1


class TestCommand:
    def test_default_template_and_placeholders(self):
        template = split_template("python src/dojo/grade_code.py {solution} {competition_id} {results}")
        argv = render_argv(template, {"solution": "/w/s.py", "competition_id": "c1", "results": "/w/r.jsonl", "workdir": "/w"})
        assert argv == ["python", "src/dojo/grade_code.py", "/w/s.py", "c1", "/w/r.jsonl"]

    def test_values_stay_one_element_and_are_never_expanded_again(self):
        template = split_template("grade '--out={results}' {competition_id}")
        argv = render_argv(template, {"solution": "s", "competition_id": "{results}; rm -rf / $(x)", "results": "r r", "workdir": "w"})
        assert argv == ["grade", "--out=r r", "{results}; rm -rf / $(x)"]

    @pytest.mark.parametrize("template, problem", [("", "empty command"), ("grade {score}", "unknown placeholder"), ("grade 'open", "quotation")])
    def test_bad_templates(self, template, problem):
        with pytest.raises(ValueError, match=problem):
            split_template(template)

    def test_no_timeout_unless_asked(self):
        """Jobs run as long as they need (the API it replaces let multi-day jobs run)."""
        assert timeout_for(100) is None and timeout_for(7 * 24 * 3600) is None

    def test_timeout_factor_is_a_multiple_with_a_floor(self):
        assert timeout_for(100, 2, 60) == 200
        assert timeout_for(5, 2, 60) == 60

    def test_max_job_seconds_caps_whatever_the_estimate(self):
        assert timeout_for(100, cap=3600) == 3600
        assert timeout_for(100, 2, 60, cap=150) == 150 and timeout_for(100, 2, 60, cap=1000) == 200

    def test_overdue_past_the_expected_time_only(self):
        assert not is_overdue(2, None, None, T0)  # not started
        assert not is_overdue(2, T0, T0 + timedelta(seconds=2), T0 + timedelta(hours=1))
        assert is_overdue(2, T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=10))
        assert is_overdue(2, T0, None, T0 + timedelta(seconds=3)) and not is_overdue(2, T0, None, T0 + timedelta(seconds=1))


class TestNodeIds:
    """A node's integer id: handed out once, kept for its life, never reused after it is gone."""

    def test_descriptions_new_and_old(self):
        from flows.grader.node_ids import NodeDescription, parse_description

        assert parse_description(NodeDescription(node_id=3, ip="10.0.0.3").text()) == (3, "10.0.0.3")
        assert parse_description("10.0.0.7") == (None, "10.0.0.7")  # a queue an older evalq made
        assert parse_description("") == (None, None) and parse_description("not an address") == (None, None)
        assert parse_description('{"node_id": -1}') == (None, None)

    def test_local_nodes_take_their_index_others_the_next_past_all(self):
        from flows.grader.node_ids import next_id

        assert [next_id("node-0", set()), next_id("node-1", {0})] == [0, 1]
        assert next_id("gpu-a", {0, 1}) == 2
        assert next_id("node-2", {0, 1, 2}) == 3  # taken by gpu-a
        assert next_id("gpu-b", {0, 1}, highest_seen=5) == 6  # 2..5 belonged to nodes since deleted
        assert next_id("node-x", set()) == 0 and next_id("node-", {0}) == 1

    def test_the_earlier_registered_node_keeps_a_contested_id(self):
        from flows.grader.node_ids import Claim, keeps_id

        first, second = Claim("gpu-b", 2, T0), Claim("gpu-a", 2, T0 + timedelta(seconds=1))
        assert keeps_id(first, [first, second]) and not keeps_id(second, [first, second])
        assert keeps_id(Claim("gpu-a", 2, T0), [Claim("gpu-b", 3, T0)])
        assert not keeps_id(Claim("b", 1, T0), [Claim("a", 1, T0)])  # same moment: the name decides


class TestTokens:
    def test_plain_and_hashed_tokens(self, tmp_path):
        path = tmp_path / "TOKENS.yaml"
        path.write_text(f"alice: tok-a\nbob: '{hash_token('tok-b', iterations=1000)}'\n")
        book = load_tokens(path)
        assert book.verify("alice", "tok-a") and book.verify("bob", "tok-b")
        assert not book.verify("alice", "tok-b") and not book.verify("bob", "tok-a")
        assert not book.verify("carol", "tok-a") and not book.verify("alice", "")
        assert book.owner_of("tok-b") == "bob" and book.owner_of("tok-c") is None
        assert "tok-a" not in repr(book)

    def test_hashes_are_salted(self):
        assert hash_token("same", iterations=1000) != hash_token("same", iterations=1000)

    @pytest.mark.parametrize("text, problem", [
        ("alice: [tok\n", "YAML does not parse at line 2"),
        ("", "expected a mapping"),
        ("- alice\n", "expected a mapping"),
        ("alice: 123\n", "alice: expected a token string"),
        ("alice: 'pbkdf2_sha256$x$zz$00'\n", "alice: malformed pbkdf2_sha256 hash"),
    ])
    def test_bad_token_files_name_the_problem_not_the_tokens(self, tmp_path, text, problem):
        path = tmp_path / "TOKENS.yaml"
        path.write_text(text)
        with pytest.raises(InputError, match=re.escape(problem)):
            load_tokens(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(InputError, match="file not found"):
            load_tokens(tmp_path / "nope.yaml")


class TestStore:
    def test_user_ids_become_safe_path_parts(self, tmp_path):
        assert user_slug("../Evil User") == "evil-user"
        assert user_slug("///").startswith("user-") and "/" not in user_slug("///")
        job_id = "8d3c5d0e-6f4e-4a53-9d38-0b8e33f4b4a1"
        assert work_dir(tmp_path, "../../x", job_id) == tmp_path / "work" / "x" / job_id
        with pytest.raises(ValueError):
            work_dir(tmp_path, "alice", "../../etc")

    def test_results_files_are_named_by_user_competition_and_time_and_never_replaced(self, tmp_path):
        assert results_name("Alice B", "titanic", T0) == "alice-b_titanic_20260102_030405.jsonl"
        first = save_results(tmp_path, "alice", "titanic", T0, "one\n")
        second = save_results(tmp_path, "alice", "titanic", T0, "two\n")
        assert (first, second) == ("alice_titanic_20260102_030405.jsonl", "alice_titanic_20260102_030406.jsonl")
        assert (tmp_path / first).read_text() == "one\n" and (tmp_path / second).read_text() == "two\n"


SPAWNER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
print("out"); print("err", file=sys.stderr)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("reason", ["timeout", "cancel"])
def test_runner_kills_the_whole_group(tmp_path: Path, reason: str):
    script, pid_file = tmp_path / "spawner.py", tmp_path / "child.pid"
    script.write_text(SPAWNER)
    stop = lambda: reason == "cancel" and pid_file.exists()  # noqa: E731
    started = time.monotonic()
    outcome = run_watched(
        [sys.executable, str(script), str(pid_file)], tmp_path, tmp_path / "out.log", tmp_path / "err.log",
        timeout=3 if reason == "timeout" else 60, should_stop=stop, poll_seconds=0.2,
    )
    assert (outcome.timed_out, outcome.cancelled) == (reason == "timeout", reason == "cancel")
    assert outcome.returncode < 0 and time.monotonic() - started < 30
    deadline = time.monotonic() + 5
    while alive(int(pid_file.read_text())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(int(pid_file.read_text())), "the grandchild outlived the kill"
    assert (tmp_path / "out.log").read_text() == "out\n" and (tmp_path / "err.log").read_text() == "err\n"


def test_runner_reports_the_exit_code(tmp_path):
    outcome = run_watched([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path, tmp_path / "o", tmp_path / "e",
                          timeout=30, should_stop=lambda: False)
    assert (outcome.returncode, outcome.timed_out, outcome.cancelled) == (3, False, False)
    assert os.path.getsize(tmp_path / "o") == 0


def test_only_a_cancel_since_the_last_schedule_counts():
    """A job cancelled, then retried from the Prefect UI (Scheduled again), is graded."""
    from types import SimpleNamespace

    from prefect.client.schemas.objects import StateType as T

    from flows.grader.flow import cancelled_since_scheduled

    def history(*kinds):
        return [SimpleNamespace(type=kind) for kind in kinds]

    assert cancelled_since_scheduled(history(T.SCHEDULED, T.PENDING, T.CANCELLED, T.RUNNING))
    assert cancelled_since_scheduled(history(T.SCHEDULED, T.CANCELLING))
    assert not cancelled_since_scheduled(history(T.SCHEDULED, T.PENDING, T.RUNNING))
    assert not cancelled_since_scheduled(history(T.SCHEDULED, T.PENDING, T.CANCELLED, T.SCHEDULED, T.PENDING, T.RUNNING))
