"""Rules 10-11 and the command: outputs, dry run, one-line errors, the summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from data_generate.challenge import Challenge, server, submission_data, write_json

from generate import jsonio
from generate.models import JobList, Resources

OLD = '"old output"\n'


@pytest.fixture
def challenge(tmp_path) -> Challenge:
    challenge = Challenge(tmp_path)
    challenge.task("pick", ids=(1, 2))
    challenge.task("open", ids=(1,))
    challenge.submission("a.json", "Équipe Λ", 0.9, {"pick": 0.5, "open": 0.0})
    challenge.submission("privileged.b.json", "Bots", 0.4, {"pick": 0.5, "open": 0.2})
    challenge.servers({"equipe_l": [server(18701)], "bots": [server(18702, compatible_task="pick", capacity=2)]})
    return challenge


def assert_untouched(challenge: Challenge) -> None:
    assert challenge.jobs_file.read_text() == OLD
    assert challenge.resources_file.read_text() == OLD


def test_writes_jobs_and_resources(challenge):
    result = challenge.run()
    assert result.exit_code == 0, result.output
    jobs = JobList.validate_python(challenge.jobs())
    assert [job.id for job in jobs] == ["equipe_l/pick/1", "equipe_l/pick/2", "bots/pick/1", "bots/pick/2"]
    resources = Resources.model_validate(challenge.resources())
    assert resources.pools == ["equipe_l_1", "bots_1"]
    assert challenge.resources()["bots_1"] == [server(18702, compatible_task="pick", capacity=2)]
    assert challenge.jobs_file.read_text(encoding="utf-8").count("Équipe Λ") == 2


def test_overwrites_outputs_atomically_leaving_no_temporary_files(challenge):
    challenge.jobs_file.write_text(OLD)
    assert challenge.run().exit_code == 0
    assert len(challenge.jobs()) == 4
    assert sorted(p.name for p in challenge.root.iterdir() if p.is_file()) == ["jobs.json", "resources-raw.json", "resources.json"]


def test_a_failed_write_keeps_the_old_file_and_is_one_line(challenge, monkeypatch):
    challenge.jobs_file.write_text(OLD)
    challenge.resources_file.write_text(OLD)

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonio.os, "replace", fail)
    result = challenge.run()
    assert result.exit_code == 2
    assert result.stderr == f"error: {challenge.jobs_file}: cannot write: No space left on device\n"
    assert_untouched(challenge)
    assert sorted(p.name for p in challenge.root.iterdir() if p.name.startswith(".")) == []


def test_zero_jobs_because_all_is_done_says_so_and_still_writes(challenge):
    challenge.jobs_file.write_text(OLD)
    for team in ("equipe_l", "bots"):
        for task, instance in [("pick", 1), ("pick", 2), ("open", 1)]:
            challenge.result(team, task, instance)
    result = challenge.run()
    assert result.exit_code == 0, result.output
    assert challenge.jobs() == []
    lines = result.stdout.splitlines()
    assert lines[-2:] == [
        "no jobs: all 5 episodes of the selected entrants already have results",
        f"wrote 0 jobs, 2 pools to {challenge.jobs_file} and {challenge.resources_file}",
    ]


def test_dry_run_writes_nothing(challenge):
    result = challenge.run("--dry-run")
    assert result.exit_code == 0
    assert "dry run: 4 jobs, 2 pools; nothing written" in result.stdout
    assert not challenge.jobs_file.exists() and not challenge.resources_file.exists()
    challenge.jobs_file.write_text(OLD)
    challenge.resources_file.write_text(OLD)
    assert challenge.run("--dry-run").exit_code == 0
    assert_untouched(challenge)


def test_defaults_are_relative_to_the_working_directory(challenge, monkeypatch):
    monkeypatch.chdir(challenge.root)
    from data_generate.challenge import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(challenge.jobs()) == 4
    instance_path = challenge.jobs()[0]["payload"]["instance_path"]
    assert os.path.isabs(instance_path)
    assert os.path.samefile(instance_path, challenge.instances / "pick" / "pick_1_template-tro_state.json")


def test_jobs_from_a_relative_instances_dir_open_from_any_working_directory(challenge, monkeypatch, tmp_path_factory):
    """A runner started in another directory (or on another node) than `evalq generate` finds the file."""
    import asyncio

    from flows.evaluators.sim import SimEvaluator

    monkeypatch.chdir(challenge.root)
    assert challenge.run("--test-instances-dir", "test_instances").exit_code == 0
    jobs = JobList.validate_python(challenge.jobs())
    assert all(os.path.isabs(job.payload.instance_path) and os.path.isfile(job.payload.instance_path) for job in jobs)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    evaluator = SimEvaluator(load_seconds=0)
    asyncio.run(evaluator.prepare(jobs[0]))
    assert evaluator.instance == {"task": "pick", "seed": 1}


def test_options_top_k_all_tasks_strict(challenge):
    result = challenge.run("--top-k", "1", "--all-tasks", "equipe_l", "--all-tasks", "bots")
    assert result.exit_code == 0
    assert [job["id"] for job in challenge.jobs()] == ["equipe_l/open/1", "equipe_l/pick/1", "equipe_l/pick/2", "bots/pick/1", "bots/pick/2"]
    assert "bots: no server compatible with task open; 1 job not emitted" in result.stdout
    result = challenge.run("--all-tasks", "bots", "--strict")
    assert result.exit_code == 2
    assert result.stderr == f"error: {challenge.resources_raw}: bots: no server compatible with task open; 1 job not emitted (--strict)\n"


def test_summary_tables_then_warnings(challenge):
    challenge.submission("c.json", "équipe-λ", 0.1, {"pick": 1})
    challenge.servers({"equipe_l": [server(18701)], "bots": [server(18702, compatible_task="pick", capacity=2)], "ghost": [server(1)]})
    challenge.result("bots", "pick", 2)
    out = challenge.run().stdout
    lines = out.splitlines()
    entrants = next(line for line in lines if line.startswith("standard"))
    assert entrants.split() == ["standard", "1", "Équipe", "Λ", "equipe_l", "0.9", "1/2", "2", "0"]
    bots = next(line for line in lines if line.startswith("privileged"))
    assert bots.split() == ["privileged", "1", "Bots", "bots", "0.4", "2/2", "1", "1"]
    pool = next(line for line in lines if line.startswith("bots_1"))
    assert pool.split() == ["bots_1", "127.0.0.1:18702", "x2", "pick", "2", "1"]
    assert out.index("Entrants") < out.index("Pools") < out.index("warning:")
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 3 and "c.json" in warnings[0] and "ghost" in warnings[1] and "task open" in warnings[2]
    assert lines[-1] == f"wrote 3 jobs, 3 pools to {challenge.jobs_file} and {challenge.resources_file}"


def _write(relative: str, data):
    def build(challenge: Challenge):
        target = challenge.root / relative
        if isinstance(data, str):
            target.write_text(data)
        else:
            write_json(target, data)
        return target

    return build


def _submission(**changes):
    data = submission_data("Zed", 0.5, {"pick": 1})
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return _write("challenge_submissions/z.json", data)


def _servers(raw):
    return _write("resources-raw.json", raw)


def _remove(relative: str, then_write: str | None = None):
    def build(challenge: Challenge):
        target = challenge.root / relative
        for child in sorted(target.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        target.unlink() if target.is_file() else target.rmdir()
        if then_write is not None:
            target.write_text(then_write)
        return target

    return build


def _empty(relative: str, keep: str | None = None):
    """Empty a folder, leaving only the (empty) subfolder `keep` if given."""

    def build(challenge: Challenge):
        target = challenge.root / relative
        _remove(relative)(challenge)
        target.mkdir()
        if keep:
            (target / keep).mkdir()
        return target

    return build


ERRORS = {
    "malformed submission": (_write("challenge_submissions/z.json", "{\"team\": "), "z.json: malformed JSON at line 1"),
    "submission not an object": (_write("challenge_submissions/z.json", [1]), "z.json: Input should be a valid dictionary"),
    "missing team": (_submission(team=...), "z.json: team: Field required"),
    "empty team": (_submission(team=""), "z.json: team: String should have at least 1 character"),
    "team not a string": (_submission(team=7), "z.json: team: Input should be a valid string"),
    "team without a slug": (_submission(team="!!!"), "z.json: team: '!!!' has no letters or digits"),
    "missing overall scores": (_submission(overall_scores=...), "z.json: overall_scores: Field required"),
    "overall q_score not a number": (_submission(overall_scores={"q_score": "0.5"}), "z.json: overall_scores.q_score: Input should be a valid number"),
    "overall q_score a boolean": (_submission(overall_scores={"q_score": True}), "z.json: overall_scores.q_score: Input should be a valid number"),
    "overall q_score NaN": (_write("challenge_submissions/z.json", '{"team": "Z", "overall_scores": {"q_score": NaN}, "per_task_scores": {"q_score": {}}}'), "z.json: overall_scores.q_score: Input should be a finite number"),
    "per-task scores not an object": (_submission(per_task_scores={"q_score": [1]}), "z.json: per_task_scores.q_score: Input should be a valid dictionary"),
    "per-task score not a number": (_submission(per_task_scores={"q_score": {"pick": None}}), "z.json: per_task_scores.q_score.pick: Input should be a valid number"),
    "unknown track": (_submission(track="open"), "z.json: track: Input should be 'standard' or 'privileged'"),
    "no submissions dir": (_remove("challenge_submissions"), "challenge_submissions: directory not found"),
    "submissions dir is a file": (_remove("challenge_submissions", then_write="x"), "challenge_submissions: not a directory"),
    "no test instances dir": (_remove("test_instances"), "test_instances: directory not found"),
    "empty submissions dir": (_empty("challenge_submissions"), "challenge_submissions: no submission files (*.json)"),
    "empty test instances dir": (_empty("test_instances"), "test_instances: no instance files"),
    "task folders without instances": (_empty("test_instances", keep="pick"), "test_instances: no instance files"),
    "instance without id": (_write("test_instances/open/open_first.json", {}), "open_first.json: no instance id in the name"),
    "two instances with one id": (_write("test_instances/pick/pick_v2_01.json", {}), "pick_v2_01.json: instance id 1 is also the id of pick_1_template-tro_state.json"),
    "no resources-raw": (_remove("resources-raw.json"), "resources-raw.json: file not found"),
    "malformed resources-raw": (_servers("{,}"), "resources-raw.json: malformed JSON at line 1 column 2"),
    "resources-raw not an object": (_servers([]), "resources-raw.json: Input should be a valid dictionary"),
    "servers not a list": (_servers({"bots": {"host": "h", "port": 1}}), "resources-raw.json: bots: Input should be a valid list"),
    "server without host": (_servers({"bots": [{"port": 1}]}), "resources-raw.json: bots.0.host: Field required"),
    "port a string": (_servers({"bots": [server(1), {"host": "h", "port": "80"}]}), "resources-raw.json: bots.1.port: Input should be a valid integer"),
    "port a float": (_servers({"bots": [{"host": "h", "port": 80.0}]}), "resources-raw.json: bots.0.port: Input should be a valid integer"),
    "port zero": (_servers({"bots": [server(0)]}), "resources-raw.json: bots.0.port: Input should be greater than or equal to 1"),
    "port too large": (_servers({"bots": [server(65536)]}), "resources-raw.json: bots.0.port: Input should be less than or equal to 65535"),
    "filter not a string": (_servers({"bots": [server(1, compatible_task=5)]}), "resources-raw.json: bots.0.compatible_task"),
    "filter list of numbers": (_servers({"bots": [server(1, not_compatible_task=[5])]}), "resources-raw.json: bots.0.not_compatible_task"),
    "capacity zero": (_servers({"bots": [server(1, capacity=0)]}), "resources-raw.json: bots.0.capacity: Input should be greater than or equal to 1"),
    "server shared by two teams": (_servers({"a": [server(5)], "bots": [server(5)]}), "resources-raw.json: bots.0: 127.0.0.1:5 is also listed at a.0"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_is_one_line_exit_2_outputs_untouched(challenge, case):
    build, expected = ERRORS[case]
    target = build(challenge)
    challenge.jobs_file.write_text(OLD)
    challenge.resources_file.write_text(OLD)
    result = challenge.run()
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert str(target) in result.stderr
    assert expected in result.stderr
    assert_untouched(challenge)


def test_the_installed_command_exits_2_without_traceback(challenge):
    _submission(team=7)(challenge)
    done = subprocess.run(
        [sys.executable, "-c", "from flows.cli import app; app()", "generate", *challenge.args()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == f"error: {challenge.submissions / 'z.json'}: team: Input should be a valid string\n"
    assert not challenge.jobs_file.exists() and not challenge.resources_file.exists()

