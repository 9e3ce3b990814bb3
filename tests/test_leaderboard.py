"""`evalq leaderboard`: numbers from hand-made metrics files, every format, bad files listed."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from flows.results.leaderboard import build_board, mean_interval, Sample, t_critical
from flows.results.metrics_files import board_from_results
from kit import make_job, write_inputs
from test_campaign_cli import assert_one_line_error, evalq

T3 = 3.182446305284263  # t(0.975, 3)
T2 = 4.302652729749464  # t(0.975, 2)


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725), (1000, 1.9623391)])
def test_t_critical_values_match_the_tables(df, expected):
    assert t_critical(df) == pytest.approx(expected, abs=1e-6)


def test_mean_interval_by_hand():
    mean, low, high = mean_interval([0.2, 0.4, 0.9])
    half = T2 * math.sqrt(0.13) / math.sqrt(3)
    assert mean == pytest.approx(0.5) and low == pytest.approx(0.5 - half) and high == pytest.approx(0.5 + half)
    assert mean_interval([0.7]) == (0.7, None, None)
    assert mean_interval([]) == (None, None, None)
    assert mean_interval([1.0, 1.0]) == (1.0, 1.0, 1.0)


def test_rows_rank_best_mean_first_per_task_and_team():
    samples = [Sample("a", "pick", 1.0), Sample("b", "pick", 0.0), Sample("b", "pick", 1.0), Sample("a", "open", 0.0)]
    board = build_board(samples, "success", planned={("a", "pick"): 2, ("b", "pick"): 2, ("a", "open"): 1, ("c", "open"): 1})
    assert [(r.task, r.team) for r in board.rows] == [("open", "a"), ("open", "c"), ("pick", "a"), ("pick", "b")]
    assert [(t.team, t.mean) for t in board.teams] == [("a", 0.5), ("b", 0.5), ("c", None)]  # a tie goes by name
    c_open = board.rows[1]
    assert c_open.episodes == 0 and c_open.coverage == 0.0 and c_open.mean is None


def write_metrics(results, team, task, instance, document, evalq_block=True):
    path = results / team / "metrics" / f"{task}_{instance}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(document, str):
        path.write_text(document)
        return
    if evalq_block:
        document = {**document, "evalq": {"team_slug": team, "task": task, "instance_id": instance}}
    path.write_text(json.dumps(document))


@pytest.fixture
def challenge(tmp_path):
    """Hand-made results of three teams, with a malformed file and one without the metric."""
    results = tmp_path / "results"
    for i, ok in enumerate([True, False, True, True]):
        write_metrics(results, "alpha", "pick", i, {"success": ok, "q_score": [0.2, 0.4, 0.9, 0.5][i]})
    write_metrics(results, "alpha", "open", 0, {"success": True})
    write_metrics(results, "alpha", "open", 1, {"success": 1}, evalq_block=False)  # team, task from the path
    write_metrics(results, "alpha", "open", 5, {"reward": 1.0})
    write_metrics(results, "beta", "pick", 0, {"success": False})
    write_metrics(results, "beta", "pick", 1, {"success": True})
    write_metrics(results, "beta", "pick", 9, "{oops")
    write_metrics(results, "beta", "open", 0, {"success": False})
    write_metrics(results, "beta", "open", 7, "[1, 2]")  # not planned: ignored with --jobs
    plan = [("alpha", "pick", range(5)), ("alpha", "open", [0, 1, 2, 5]), ("beta", "pick", [0, 1, 2, 9]),
            ("beta", "open", [0]), ("gamma", "pick", [0, 1])]
    jobs = [make_job(tmp_path, team, task, i, ["p_1"]) for team, task, ids in plan for i in ids]
    from generate.models import Resources

    jobs_file, _ = write_inputs(tmp_path, jobs, Resources.model_validate({"p_1": [{"host": "h", "port": 1}]}))
    return results, jobs_file, jobs


def row(board_json, team, task):
    rows = board_json["rows"] if task != "*" else board_json["teams"]
    return next(r for r in rows if r["team"] == team and r["task"] == task)


def test_leaderboard_numbers_from_metrics_files(challenge):
    results, _, jobs = challenge
    board = board_from_results(results, "success", jobs).model_dump(mode="json")
    alpha_pick = row(board, "alpha", "pick")
    half = T3 * 0.5 / 2  # s = 0.5 for 1, 0, 1, 1
    assert alpha_pick["episodes"] == 4 and alpha_pick["planned"] == 5 and alpha_pick["coverage"] == 0.8
    assert alpha_pick["mean"] == 0.75
    assert alpha_pick["low"] == pytest.approx(0.75 - half) and alpha_pick["high"] == pytest.approx(0.75 + half)
    assert row(board, "alpha", "open") == {"team": "alpha", "task": "open", "episodes": 2, "planned": 4,
                                                "coverage": 0.5, "mean": 1.0, "low": 1.0, "high": 1.0}
    beta_pick = row(board, "beta", "pick")
    assert beta_pick["mean"] == 0.5 and beta_pick["high"] == pytest.approx(0.5 + 12.706204736174694 * 0.5)
    assert row(board, "beta", "open")["mean"] == 0.0 and row(board, "beta", "open")["low"] is None
    gamma = row(board, "gamma", "pick")
    assert gamma["episodes"] == 0 and gamma["coverage"] == 0.0 and gamma["mean"] is None
    assert [t["team"] for t in board["teams"]] == ["alpha", "beta", "gamma"]
    assert board["teams"][0]["mean"] == pytest.approx(5 / 6) and board["teams"][0]["planned"] == 9
    assert board["teams"][1]["mean"] == pytest.approx(1 / 3)
    assert [r["team"] for r in board["rows"] if r["task"] == "pick"] == ["alpha", "beta", "gamma"]
    problems = {path.split("results/")[1]: why for path, why in board["problems"].items()}
    assert problems == {"alpha/metrics/open_5.json": "no numeric 'success'",
                        "beta/metrics/pick_9.json": "malformed JSON at line 1 column 2: Expecting property name enclosed in double quotes"}


def test_leaderboard_without_a_plan_counts_every_file_and_another_metric(challenge):
    results, _, _ = challenge
    board = board_from_results(results, "q_score").model_dump(mode="json")
    assert board["rows"] == [row(board, "alpha", "pick")]
    q = board["rows"][0]
    assert q["planned"] is None and q["coverage"] is None and q["episodes"] == 4
    assert q["mean"] == pytest.approx(0.5)
    assert any(path.endswith("beta/metrics/open_7.json") and "expected a JSON object" in why
               for path, why in board["problems"].items())


def test_leaderboard_command_in_every_format(challenge):
    results, jobs_file, _ = challenge
    base = ["leaderboard", "--results-dir", str(results), "--jobs", str(jobs_file)]
    as_json = evalq(*base, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    board = json.loads(as_json.stdout)
    assert row(board, "alpha", "pick")["mean"] == 0.75 and board["interval"].startswith("Student t 95%")
    as_csv = evalq(*base, "--format", "csv")
    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    alpha = next(r for r in records if r["team"] == "alpha" and r["task"] == "pick")
    assert float(alpha["mean"]) == 0.75 and float(alpha["coverage"]) == 0.8
    assert float(alpha["low"]) == pytest.approx(0.75 - T3 / 4)
    assert any(r["team"] == "alpha" and r["task"] == "*" for r in records)
    as_md = evalq(*base, "--format", "md")
    assert "| alpha | pick | 4 | 5 | 80% | 0.7500 | -0.0456 | 1.5456 |" in as_md.stdout
    assert "`" in as_md.stdout and "pick_9.json" in as_md.stdout
    table = evalq(*base, "--metric", "success")
    assert table.returncode == 0 and "alpha" in table.stdout and "0.7500" in table.stdout
    assert "not used:" in table.stdout and "open_5.json: no numeric 'success'" in table.stdout


def test_leaderboard_bad_input(tmp_path, challenge):
    results, _, _ = challenge
    assert_one_line_error(evalq("leaderboard", "--results-dir", str(tmp_path / "nowhere")), "nowhere", "directory not found")
    assert_one_line_error(evalq("leaderboard", "--results-dir", str(results), "--format", "xml"), "--format", "xml")
    broken = tmp_path / "broken.json"
    broken.write_text("[{}]")
    assert_one_line_error(evalq("leaderboard", "--results-dir", str(results), "--jobs", str(broken)), "broken.json")
