"""`evalq server start --database <PostgreSQL URL>` (in the foreground) is ready for
`evalq campaign run` with no other step: work pools, deployments and automation applied.

PostgreSQL only: it takes a database of its own from the `--backend postgres` cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from flows.runtime.host import free_port
from flows.runtime.process_groups import terminate_group
from kit import make_fleet, make_job, wait_for, write_inputs

pytestmark = pytest.mark.backends


def evalq(*args: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def test_evalq_server_on_postgresql_serves_a_campaign(tmp_path, new_database):
    database_env = new_database()
    if not database_env:
        pytest.skip("PostgreSQL only: pytest --backend postgres")
    (url,) = database_env.values()
    env = {**os.environ, "EVALQ_SERVER_HOME": str(tmp_path / "server")}
    env.pop("PREFECT_API_URL", None)
    port = free_port()
    log = tmp_path / "server-start.log"
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "server", "start", "--database", url, "--no-ui", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        wait_for(lambda: "evalq server ready" in log.read_text() or server.poll() is not None, 180, "the server")
        assert server.poll() is None, log.read_text()[-3000:]
        status = evalq("server", "status", env=env)
        assert status.returncode == 0 and "postgresql" in status.stdout, status.stdout

        fleet, resources = make_fleet({"pg_1": [1]})
        jobs = [make_job(tmp_path, "pg", "pick", i, ["pg_1"]) for i in range(2)]
        jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
        with fleet:
            result = evalq("campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file),
                           "--results-dir", str(tmp_path / "results"), "--name", "on-postgres",
                           "--evaluator-option", "steps=2", "--evaluator-option", "step_seconds=0.05", env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert all(job.metrics_path(tmp_path / "results").exists() for job in jobs)
        runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter",
                          json={"flow_runs": {"tags": {"all_": ["campaign:on-postgres"]}}}).json()
        assert len(runs) == 2 and {run["state"]["type"] for run in runs} == {"COMPLETED"}
    finally:
        terminate_group(server)
