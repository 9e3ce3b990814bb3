"""`evalq server start|status|stop` and campaign commands that find the user's server."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from flows.runtime.host import free_port, process_alive
from flows.runtime.server_record import read_record
from kit import make_fleet, make_job, write_inputs


def evalq(*args: str, env: dict, cwd=None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def test_a_campaign_uses_the_running_user_server_and_leaves_it_up(tmp_path):
    env = {**os.environ, "EVALQ_SERVER_HOME": str(tmp_path / "server")}
    env.pop("PREFECT_API_URL", None)
    port = free_port()
    started = evalq("server", "start", "--detach", "--no-ui", "--port", str(port), env=env)
    try:
        assert started.returncode == 0, started.stderr
        api_url = f"http://127.0.0.1:{port}/api"
        assert f"evalq server ready: {api_url}" in started.stdout
        status = evalq("server", "status", env=env)
        assert status.returncode == 0 and api_url in status.stdout and "database sqlite" in status.stdout

        again = evalq("server", "start", "--detach", "--port", str(free_port()), env=env)
        assert again.returncode == 2 and "already runs" in again.stderr and "Traceback" not in again.stderr

        fleet, resources = make_fleet({"a_1": [1]})
        jobs = [make_job(tmp_path, "a", "pick", i, ["a_1"]) for i in range(2)]
        jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
        project = tmp_path / "project"
        project.mkdir()
        with fleet:
            result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file),
                           "--results-dir", "results", "--name", "shared", "--evaluator-option", "steps=2",
                           "--evaluator-option", "step_seconds=0.05", env=env, cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Prefect server: http://127.0.0.1:{port}/api (your evalq server)\n" in result.stderr
        assert all((project / "results" / "a" / "metrics" / f"pick_{i}.json").exists() for i in range(2))
        assert not (project / ".evalq" / "server.json").exists()  # no server of its own
        runs = httpx.post(f"{api_url}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["campaign:shared"]}}}).json()
        assert {run["state"]["type"] for run in runs} == {"COMPLETED"} and len(runs) == 2
        assert evalq("server", "status", env=env).returncode == 0  # still up for the next command
    finally:
        record = read_record(tmp_path / "server")
        stopped = evalq("server", "stop", env=env)
    assert stopped.returncode == 0 and "evalq server stopped" in stopped.stdout
    assert record is not None and not process_alive(record.pid)
    after = evalq("server", "status", env=env)
    assert after.returncode == 1 and "no evalq server running" in after.stdout


def test_a_database_url_of_another_kind_is_refused(tmp_path):
    env = {**os.environ, "EVALQ_SERVER_HOME": str(tmp_path / "server")}
    result = evalq("server", "start", "--database", "mysql://me:hunter2@db/prefect", env=env)
    assert result.returncode == 2 and result.stderr.startswith("error: --database:")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_a_server_for_other_nodes_records_their_url_and_has_every_deployment_the_readme_names(tmp_path):
    from flows.runtime.host import is_loopback_url

    env = {**os.environ, "EVALQ_SERVER_HOME": str(tmp_path / "server")}
    env.pop("PREFECT_API_URL", None)
    port = free_port()
    started = evalq("server", "start", "--detach", "--no-ui", "--host", "0.0.0.0", "--port", str(port), env=env)
    try:
        assert started.returncode == 0, started.stderr
        record = read_record(tmp_path / "server")
        shared = record.advertised_url
        assert shared.endswith(f":{port}/api") and not is_loopback_url(shared)
        assert started.stdout.splitlines()[1].strip().startswith(f"export PREFECT_API_URL={shared} ")
        assert evalq("server", "status", env=env).stdout.startswith(f"evalq server running: {shared} (here {record.api_url},")
        deployments = httpx.post(f"{record.api_url}/deployments/filter", json={}).json()
        flows = {flow["id"]: flow["name"] for flow in httpx.post(f"{record.api_url}/flows/filter", json={}).json()}
        names = {(flows[d["flow_id"]], d["name"], d["work_pool_name"]) for d in deployments}
        assert {("evaluate-episode", "local", "evalq-local"), ("campaign", "local", "evalq-local"),
                ("evaluate-episode", "runner", "evalq-runner")} <= names
        # The runners of a cluster get the URL for other nodes: no loopback to refuse.
        script = evalq("workpools", "slurm-runners", "--pool", "evalq-runner", "--nodes", "1", "--slots", "1", "--dry-run",
                       env=env, cwd=tmp_path)
        assert script.returncode == 0, script.stderr
        assert script.stderr == f"Prefect server: {record.api_url} (your evalq server; other nodes: {shared})\n"
    finally:
        stopped = evalq("server", "stop", env=env)
    assert stopped.returncode == 0
