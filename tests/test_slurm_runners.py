"""Warm runners on SLURM (`evalq workpools slurm-runners`): the rendered job array, executed by
bash without a cluster, then a real 2-task array on the single-node cluster running a campaign."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.naming import job_id_of_run_name
from test_slurm_script import sbatch_directives
from test_slurm_worker import cluster_problem
from workpools.slurm.pilot import RunnerArray, log_path, render

ARGV_DUMPER = "import json, sys; print(json.dumps(sys.argv[1:]))"


def evalq(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def evalq_here(*args: str, env: dict | None = None):
    """The command in this process (no interpreter start): exit code and stderr."""
    from typer.testing import CliRunner

    from flows.cli.root import app

    return CliRunner().invoke(app, list(args), env=env)


class TestScript:
    def array(self, tmp_path: Path, **values) -> RunnerArray:
        defaults = dict(pool="gpu runners", nodes=3, slots=4, idle_timeout=300, log_dir=tmp_path / "logs",
                        runner_command=[sys.executable, "-c", ARGV_DUMPER])
        return RunnerArray(**{**defaults, **values})

    def test_directives_one_array_task_per_node_and_a_log_per_task(self, tmp_path):
        array = self.array(tmp_path, gres="gpu:1", partition="gpu", time_limit="8:00:00", working_dir=tmp_path / "w")
        assert sbatch_directives(render(array)) == {
            "--job-name": "evalq-runner", "--array": "0-2", "--partition": "gpu", "--time": "8:00:00",
            "--gres": "gpu:1", "--output": f"{tmp_path}/logs/%x-%A_%a.log", "--chdir": f"{tmp_path}/w",
            "--no-requeue": "",
        }
        assert log_path(array, "41", 2) == tmp_path / "logs" / "evalq-runner-41_2.log"

    def test_relative_log_dir_becomes_absolute(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert self.array(tmp_path, log_dir=Path("logs")).log_dir == tmp_path / "logs"

    @pytest.mark.parametrize("pool", ["gpu runners", "it's \"quoted\"", "$(touch {marker})", "`touch {marker}`; x"])
    def test_bash_hands_names_to_the_runner_literally(self, tmp_path, pool):
        """The script's own `exec` line, run by bash: the runner gets exactly these words."""
        marker = tmp_path / "injected"
        pool = pool.format(marker=marker)
        array = self.array(tmp_path, pool=pool, work_queues=["queue 'a'", "b"], setup=["export FROM_SETUP=1"])
        script = tmp_path / "runners.sbatch"
        script.write_text(render(array))
        env = {**os.environ, "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "2"}
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=30)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [
            "runner", "--pool", pool, "--work-queue", "queue 'a'", "--work-queue", "b",
            "--slots", "4", "--idle-timeout", "300", "--name", "evalq-runner-41_2",
        ]
        assert not marker.exists()

    def test_line_breaks_are_rejected_with_one_line_naming_the_option(self, tmp_path):
        for args, option in [(["--pool", "a\nb"], "--pool"), (["--pool", "p", "--work-queue", "q\r"], "--work-queue"),
                             (["--pool", "p", "--job-name", "#SBATCH\n--x"], "--job-name"),
                             (["--pool", " "], "--pool"), (["--pool", "p", "--time", "soon"], "--time")]:
            result = evalq_here("workpools", "slurm-runners", "--nodes", "2", "--slots", "1", *args, "--dry-run")
            assert result.exit_code == 2, (args, result.stderr)
            assert result.stderr.startswith(f"error: {option}: ") and result.stderr.count("\n") == 1, result.stderr

    def test_without_a_server_it_says_how_to_find_one(self, tmp_path):
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(restore_defaults={PREFECT_API_URL}):
            result = evalq_here("workpools", "slurm-runners", "--pool", "p", "--nodes", "1", "--slots", "1",
                                "--log-dir", str(tmp_path), env={"PREFECT_API_URL": None})
        assert result.exit_code == 2
        assert result.stderr == ("error: no Prefect server found: pass --api URL, set PREFECT_API_URL, or start one "
                                 "with `evalq server start --detach`\n")


class TestChecks:
    """`--dry-run` runs the checks, then prints the script; each refusal is one line, exit 2."""

    ARGS = ("workpools", "slurm-runners", "--nodes", "1", "--slots", "1", "--dry-run")

    def test_a_loopback_api_url_is_refused_unless_allowed(self, slurm_runner_pool, prefect_server):
        refused = evalq_here(*self.ARGS, "--pool", slurm_runner_pool)
        assert refused.exit_code == 2 and refused.stdout == ""
        assert refused.stderr == (f"error: the runners would talk to {prefect_server.api_url}, this machine's loopback, which "
                                  "other nodes cannot reach: serve Prefect on an address they reach (`evalq server start "
                                  "--host 0.0.0.0`, or --api URL), or pass --allow-loopback on a single-node cluster\n")
        allowed = evalq_here(*self.ARGS, "--pool", slurm_runner_pool, "--allow-loopback")
        assert allowed.exit_code == 0 and allowed.stdout.startswith("#!/bin/bash")
        assert allowed.stderr == f"Prefect server: {prefect_server.api_url} (PREFECT_API_URL)\n"

    def test_an_unknown_pool_is_refused_with_the_pools_of_the_right_type(self, slurm_runner_pool, prefect_server):
        refused = evalq_here(*self.ARGS, "--pool", "gpu-runnres", "--allow-loopback")
        assert refused.exit_code == 2 and refused.stdout == ""
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"error: --pool gpu-runnres: no work pool of type evalq-runner by that name on "
                               f"{prefect_server.api_url} (pools of that type: ")
        assert slurm_runner_pool in line and "`evalq workpools apply --kind runner --name gpu-runnres` creates one" in line


# -- on the real cluster ------------------------------------------------------------------------

POOL = "evalq-runner-slurm-test"
DEPLOYMENT = "evaluate-episode/slurm-runners-test"


@pytest.fixture(scope="module")
def slurm_runner_pool(prefect_server):
    """prefect.yaml's `runner` deployment, on a pool of its own."""
    from kit import apply_runner_pool

    asyncio.run(apply_runner_pool(POOL, "runner", as_name="slurm-runners-test"))
    return POOL


def task_state(job_id: str, task: int, timeout: float) -> tuple[str, int]:
    """State and exit code of one array task, once it has ended (or the timeout passed)."""
    from workpools.slurm import commands

    deadline = time.monotonic() + timeout
    while True:
        job = asyncio.run(commands.job(f"{job_id}_{task}"))
        if job is not None and job.state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            return job.state, job.exit_code
        if time.monotonic() > deadline:
            return (job.state if job else "UNKNOWN"), -1
        time.sleep(1)


@pytest.mark.slurm
@pytest.mark.skipif(cluster_problem() is not None, reason=cluster_problem() or "")
def test_a_runner_array_plays_a_campaign_and_exits_when_idle(slurm_runner_pool, prefect_server, tmp_path):
    from flows.campaign.flow import campaign
    from kit import make_fleet, make_job, write_inputs
    from test_runner import claims, runs_of

    elsewhere = tmp_path / "runner-cwd"  # not where the jobs were written: paths must be absolute
    elsewhere.mkdir()
    fleet, resources = make_fleet({"p_1": [1, 1], "q_1": [1, 1]})
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for team in "pq" for i in range(4)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    submitted = evalq(
        "workpools", "slurm-runners", "--pool", POOL, "--nodes", "2", "--slots", "2", "--idle-timeout", "10",
        "--gres", "gpu:1", "--partition", "debug", "--time", "5", "--log-dir", str(tmp_path / "logs"),
        "--chdir", str(elsewhere), "--job-name", "evalq-runner-test", "--allow-loopback",  # a single-node cluster
        env={**os.environ, "PREFECT_API_URL": prefect_server.api_url},
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.isdigit(), submitted.stdout
    try:
        with fleet:
            state = asyncio.run(campaign(
                jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
                name="slurm-runners", deployment=DEPLOYMENT, stats_interval=5.0, return_state=True,
                evaluator_options={"load_seconds": 0.2, "steps": 6, "step_seconds": 0.2},
            ))
        ends = [task_state(job_id, task, timeout=120) for task in (0, 1)]
    finally:
        subprocess.run(["scancel", job_id], check=False)
    logs = [log_path(RunnerArray(pool=POOL, nodes=2, slots=2, idle_timeout=10, log_dir=tmp_path / "logs",
                                 job_name="evalq-runner-test"), job_id, task).read_text() for task in (0, 1)]
    assert state.is_completed(), (state.message, logs)
    summary = state.result()
    assert summary["done"] == len(jobs) and not summary["failed"] and not summary["retried"], summary
    assert ends == [("COMPLETED", 0), ("COMPLETED", 0)], (ends, logs)

    runs = asyncio.run(runs_of("slurm-runners"))
    assert sorted(run.name for run in runs) == sorted(f"slurm-runners:{job.id}" for job in jobs)  # each episode once
    assert all(run.state.is_completed() for run in runs)
    for job in jobs:
        assert json.loads(job.metrics_path(tmp_path / "results").read_text())["evalq"]["job_id"] == job.id
    names = [f"evalq-runner-{job_id}_{task}" for task in (0, 1)]
    claimed = asyncio.run(claims([run.id for run in runs]))
    assert len(claimed) == len(jobs) and all(any(name in message for name in names) for message in claimed)
    ran = [int(re.search(r"stopped after (\d+) flow runs", log).group(1)) for log in logs]
    assert sum(ran) == len(jobs), (ran, logs)  # a warm runner may claim them all before the other starts


@pytest.mark.slurm
@pytest.mark.skipif(cluster_problem() is not None, reason=cluster_problem() or "")
def test_scancel_of_pilots_mid_claim_strands_nothing_and_the_kept_pilots_come_back(slurm_runner_pool, prefect_server, tmp_path):
    """`slurm-runners --keep 2`: the pilots are `scancel`ed while they claim runs (each claim paused
    2 s after the server granted it, inside the part a stop cannot interrupt: the race a scancel
    hits by chance, every time). No run is left Pending, the keeper submits new pilots, and the
    campaign completes every episode exactly once."""
    import contextvars
    import threading

    from flows.campaign.flow import campaign
    from flows.naming import claim_of_message
    from kit import make_fleet, make_job, wait_for, write_inputs
    from test_runner import claims, runs_of
    from workpools.runner.claims import CLAIM_PAUSE_ENV

    fleet, resources = make_fleet({"p_1": [1, 1], "q_1": [1, 1]})
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for team in "pq" for i in range(4)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    name = "slurm-keep"
    keeper_log = tmp_path / "keeper.log"
    keeper = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "workpools", "slurm-runners", "--pool", POOL, "--nodes", "2", "--slots", "2",
         "--idle-timeout", "20", "--keep", "2", "--allow-loopback", "--gres", "gpu:1", "--partition", "debug", "--time", "5",
         "--log-dir", str(tmp_path / "logs"), "--job-name", "evalq-runner-keep"],
        env={**os.environ, "PREFECT_API_URL": prefect_server.api_url, CLAIM_PAUSE_ENV: "2"},
        stdout=subprocess.PIPE, stderr=open(keeper_log, "ab"), text=True, start_new_session=True,
    )
    first = keeper.stdout.readline().strip()
    assert first.isdigit(), keeper_log.read_text()
    outcome: dict = {}

    def scancel_while_claiming():
        def claimed_by_first_pilots():
            return [run for run in asyncio.run(runs_of(name)) if run.state and run.state.type.value == "PENDING"
                    and (claim_of_message(run.state.message) or ("",))[0].startswith(f"evalq-runner-{first}_")]

        outcome["mid-claim"] = wait_for(claimed_by_first_pilots, 180, "a pilot's claim")
        subprocess.run(["scancel", first], check=True)

    helper = threading.Thread(target=contextvars.copy_context().run, args=(scancel_while_claiming,))
    try:
        with fleet:
            helper.start()
            state = asyncio.run(campaign(
                jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
                name=name, deployment=DEPLOYMENT, stats_interval=5.0, return_state=True,
                evaluator_options={"load_seconds": 0.2, "steps": 6, "step_seconds": 0.2},
            ))
            helper.join()
    finally:
        keeper.send_signal(signal.SIGTERM)
        keeper_rest, _ = keeper.communicate(timeout=60)
        submitted = [first, *keeper_rest.split()]
        subprocess.run(["scancel", *submitted], check=False)
    assert state.is_completed(), (state.message, keeper_log.read_text())
    summary = state.result()
    assert summary["done"] == len(jobs) and not summary["failed"], summary
    runs = asyncio.run(runs_of(name))
    assert all(run.state.is_final() for run in runs), [(run.name, run.state) for run in runs]  # none left Pending
    completed = sorted(job_id_of_run_name(run.name) for run in runs if run.state.is_completed())
    assert completed == sorted(job.id for job in jobs)  # each episode completed exactly once
    for job in jobs:
        assert json.loads(job.metrics_path(tmp_path / "results").read_text())["evalq"]["job_id"] == job.id

    async def histories():
        from prefect import get_client

        async with get_client() as client:
            return [await client.read_flow_run_states(run.id) for run in outcome["mid-claim"]]

    handed_back = [s.message for states in asyncio.run(histories()) for s in states if s.type.value == "SCHEDULED"
                   and "handed back" in (s.message or "")]
    assert handed_back, "the scancel never landed during a claim"  # the race was hit: a claim won, then given back
    assert len(submitted) >= 2, keeper_log.read_text()  # the kept pilots came back...
    finishers = {claim_of_message(m)[0] for m in asyncio.run(claims([r.id for r in runs if r.state.is_completed()]))}
    assert any(runner.startswith(f"evalq-runner-{job_id}_") for runner in finishers for job_id in submitted[1:])  # ...and played
    assert keeper.returncode == 0 and "stopped keeping pilots" in keeper_log.read_text()
