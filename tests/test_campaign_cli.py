"""`evalq campaign run` and `evalq pools` as a user runs them: exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from flows.runtime.host import free_port
from kit import make_fleet, make_job, write_inputs


def evalq(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def inputs(tmp_path):
    _, resources = make_fleet({"a_1": [1]})
    jobs = [make_job(tmp_path, "a", "pick", 1, ["a_1"])]
    return write_inputs(tmp_path, jobs, resources)


def test_missing_jobs_file(tmp_path, inputs):
    _, resources_file = inputs
    result = evalq("campaign", "run", "--jobs", str(tmp_path / "nope.json"), "--resources", str(resources_file))
    assert_one_line_error(result, "nope.json", "file not found")


def test_job_naming_an_unknown_pool(tmp_path, inputs):
    jobs_file, resources_file = inputs
    jobs = json.loads(jobs_file.read_text())
    jobs[0]["resource_types"] = ["a_1", "zz_9"]
    jobs_file.write_text(json.dumps(jobs))
    result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file))
    assert_one_line_error(result, "jobs.json", "zz_9")


def test_malformed_resources(tmp_path, inputs):
    jobs_file, resources_file = inputs
    resources_file.write_text('{"a_1": [{"host": "h", "port": "eighty"}]}')
    result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file))
    assert_one_line_error(result, "resources.json", "port")


def test_unreachable_api(tmp_path, inputs):
    jobs_file, resources_file = inputs
    env = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file), env=env)
    assert_one_line_error(result, "127.0.0.1:9", "unreachable")
    assert not (tmp_path / "results").exists()


def test_bad_evaluator_option(tmp_path, inputs):
    jobs_file, resources_file = inputs
    result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file),
                   "--evaluator-option", "no-equals-sign")
    assert_one_line_error(result, "key=value")


def test_pools_apply_and_status(prefect_server, inputs):
    _, resources_file = inputs
    env = {"PREFECT_API_URL": prefect_server.api_url}
    applied = evalq("pools", "apply", str(resources_file), env=env)
    assert applied.returncode == 0, applied.stderr
    assert "2 limits" in applied.stdout
    status = evalq("pools", "status", str(resources_file), env=env)
    assert status.returncode == 0, status.stderr
    assert "a_1" in status.stdout and "0/1" in status.stdout


def test_pools_need_an_api(inputs, tmp_path):
    _, resources_file = inputs
    env = {**os.environ}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, "-m", "flows.cli", "pools", "status", str(resources_file)],
                            capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert_one_line_error(result, "no Prefect server found", "PREFECT_API_URL", "evalq server start --detach",
                          "no campaign has run in this folder")


@pytest.mark.parametrize("alive, expected_code", [(True, 0), (False, 1)])
def test_campaign_run_exit_code_tells_whether_everything_was_done(episode_worker, tmp_path, alive, expected_code):
    fleet, resources = make_fleet({"cli_1": [1]})
    jobs = [make_job(tmp_path, "cli", "pick", 1, ["cli_1"])]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    env = {"PREFECT_API_URL": os.environ["PREFECT_API_URL"]}
    args = ["campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file),
            "--results-dir", str(tmp_path / "results"), "--name", f"cli-exit-{alive}", "--max-attempts", "1",
            "--evaluator-option", "load_seconds=0.1", "--evaluator-option", "steps=3", "--evaluator-option", "connect_timeout=2", "--server-wait", "2"]
    if alive:
        with fleet:
            result = evalq(*args, env=env)
    else:
        result = evalq(*args, env=env)
    assert result.returncode == expected_code, result.stderr[-3000:]
    failed = (tmp_path / "results" / "failed.txt").read_text()
    assert failed == ("" if alive else "cli/pick/1\n")
    assert "Campaign cli-exit" in result.stderr  # the summary table


def test_a_finished_campaign_is_a_no_op_without_any_server(tmp_path):
    """Every episode has metrics: say so and exit 0 before contacting (or starting) any server."""
    fleet, resources = make_fleet({"noop_1": [1]})
    jobs = [make_job(tmp_path, "noop", "pick", i, ["noop_1"]) for i in range(3)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    for job in jobs:
        job.metrics_path(tmp_path / "results").parent.mkdir(parents=True, exist_ok=True)
        job.metrics_path(tmp_path / "results").write_text("{}")
    nobody = {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}  # nothing listens there
    result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file),
                   "--results-dir", str(tmp_path / "results"), "--name", "noop", env=nobody)
    assert result.returncode == 0, result.stderr
    assert "all 3 episodes already have metrics" in result.stdout
    assert not (tmp_path / "results" / "failed.txt").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--max-in-flight", "2", "--resume-below", "0"], "--resume-below 0: dispatch would never resume"),
    (["--max-in-flight", "2", "--resume-at", "-1"], "--resume-at -1: dispatch would never resume"),
    (["--resume-at", "0"], "--resume-at needs --max-in-flight"),
])
def test_thresholds_that_never_resume_are_refused(inputs, args, fragment):
    jobs_file, resources_file = inputs
    result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file), *args)
    assert_one_line_error(result, fragment)


def test_max_in_flight_2_resume_at_0_completes_in_waves_and_logs_plain_progress(episode_worker, tmp_path):
    """The batch tool's `--stop_threshold 2 --resume_threshold 0`: two at a time, the next two once both ended.
    Its output is no terminal: the progress bar is a plain line per stats tick."""
    import asyncio

    from test_campaign import campaign_runs

    fleet, resources = make_fleet({"wave_1": [1, 1, 1]})
    jobs = [make_job(tmp_path, "wave", "pick", i, ["wave_1"]) for i in range(5)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    with fleet:
        result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file),
                       "--results-dir", str(tmp_path / "results"), "--name", "waves", "--max-in-flight", "2",
                       "--resume-at", "0", "--stats-interval", "1", "--evaluator-option", "load_seconds=0.1",
                       "--evaluator-option", "steps=5", "--evaluator-option", "step_seconds=0.1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(asyncio.run(campaign_runs("waves")), key=lambda run: run.created)
    assert len(runs) == 5 and all(run.state.is_completed() for run in runs)
    in_flight_at = [sum(1 for other in runs if other.created < run.created < other.end_time) for run in runs]
    assert in_flight_at[0::2] == [0, 0, 0], in_flight_at  # each wave starts once the last one has ended
    assert max(in_flight_at) <= 1, in_flight_at
    progress = [line for line in result.stderr.splitlines() if line.startswith("episodes ")]
    assert progress and progress[-1].startswith("episodes 5/5 | failed 0 | cancelled 0 | in flight 0 | retried 0 | 0:00:")
    assert all(line.endswith(" elapsed") for line in progress), progress  # whole lines, never a cut bar


@pytest.mark.parametrize("signum, how", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_sigterm_or_ctrl_c_stops_a_campaign_with_one_line_and_it_goes_on_where_it_stopped(episode_worker, tmp_path, signum, how):
    import time

    from kit import wait_for

    fleet, resources = make_fleet({"sig_1": [1]})
    jobs = [make_job(tmp_path, "sig", "pick", i, ["sig_1"]) for i in range(4)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    name = f"signalled-{how}"
    args = ["campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file), "--results-dir",
            str(tmp_path / "results"), "--name", name, "--evaluator-option", "load_seconds=0.1",
            "--evaluator-option", "steps=10", "--evaluator-option", "step_seconds=0.2"]
    with fleet:
        command = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env={**os.environ})
        wait_for(lambda: jobs[0].metrics_path(tmp_path / "results").exists(), 120, "the first episode")
        time.sleep(0.5)
        command.send_signal(signum)
        _, stderr = command.communicate(timeout=120)
        assert command.returncode == 128 + signum, stderr[-3000:]
        assert stderr.rstrip().splitlines()[-1] == f"Campaign {name!r} stopped by {how}; the same command goes on where it stopped"
        assert "Traceback" not in stderr and "ERROR" not in stderr, stderr[-3000:]
        again = evalq(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(job.metrics_path(tmp_path / "results").exists() for job in jobs)
