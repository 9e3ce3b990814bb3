"""The grading API end to end: `evalq grader serve --nodes 2` on a real Prefect server, real node
runners, our own grader script, httpx (and curl, and `evalq grade`) as the clients."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli.root import app
from tests.grader_kit import FINAL, TOKENS, GraderService, config, process_gone, solution

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def service(prefect_server, tmp_path_factory):
    grader = GraderService(tmp_path_factory.mktemp("grader"), prefect_server.api_url)
    try:
        yield grader.start()
    finally:
        grader.stop()


def test_sync_submission_answers_with_the_results(service):
    answer = service.submit(solution(sleep=0.5), config(user="../Evil User", competition="titanic"), wait=True)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "completed" and body["exit_code"] == 0 and body["message"] is None
    source = solution(sleep=0.5).decode()
    assert json.loads(body["stdout"]) == {"competition_id": "titanic", "score": len(source)}
    assert body["stderr"] == "grader log line\n"
    assert body["started_at"] <= body["completed_at"]
    job_id = body["job_id"]

    # The user id was slugged before it became a path: everything stays inside the results dir.
    workdir = service.results_dir / "work" / "evil-user" / job_id
    assert (workdir / "solution.py").read_text() == source
    saved = list(service.results_dir.glob("evil-user_titanic_*.jsonl"))
    assert [re.fullmatch(r"evil-user_titanic_\d{8}_\d{6}\.jsonl", path.name) is not None for path in saved] == [True]
    assert saved[0].read_text() == body["stdout"]

    status = service.get(f"/api/status/{job_id}").json()
    assert status["status"] == "completed" and status["node_id"] == body["node_id"]
    assert status["queue_position"] is None and status["exit_code"] == 0
    results = service.get(f"/api/results/{job_id}").json()
    assert results["stdout"] == body["stdout"] and results["status"] == "completed"
    listed = service.get("/api/jobs", user_id="../Evil User").json()["jobs"]
    assert listed[0]["job_id"] == job_id and listed[0]["user_id"] == "../Evil User"
    assert job_id not in {job["job_id"] for job in service.get("/api/jobs", status="failed").json()["jobs"]}


def test_failing_grader_and_timeout_are_failed_jobs(service):
    failing = service.submit(solution(exit_code=3), config(expected_time=5), wait=True).json()
    assert failing["status"] == "failed" and failing["exit_code"] == 3
    assert failing["stdout"] == "grading titanic\n"  # no results.jsonl: the command's stdout instead
    # expected_time 1 x factor 2 = 2 s: the 30 s grading is killed at the timeout
    slow = service.submit(solution(sleep=30), config(expected_time=1), wait=True).json()
    assert slow["status"] == "failed" and slow["exit_code"] < 0
    assert not list(service.results_dir.glob("alice_titanic_*.jsonl"))  # no results file for failures


def test_async_submissions_go_to_the_shortest_queue(service):
    big = service.submit(solution(sleep=8), config(expected_time=100)).json()
    assert big["status"] == "pending" and big["job_id"] in big["message"] and big["created_at"]
    small = service.submit(solution(sleep=4), config(expected_time=10)).json()
    smaller = service.submit(solution(sleep=1), config(expected_time=5)).json()
    assert big["node_id"] != small["node_id"]  # both nodes idle: the big job takes one, the next the other
    assert smaller["node_id"] == small["node_id"]  # 10 s queued there against 100 s on the other
    nodes = {node["node_id"]: node for node in service.get("/api/nodes").json()["nodes"]}
    loads = {node_id: (node["queue_length"], node["total_wait_time"]) for node_id, node in nodes.items()}
    assert loads[big["node_id"]] == (1, 100) and loads[small["node_id"]] == (2, 15)
    assert {node["ip"] for node in nodes.values()} == {"127.0.0.1"}
    assert {node_id: node["node_name"] for node_id, node in nodes.items()} == {0: "node-0", 1: "node-1"}
    assert {node["status"] for node in nodes.values()} == {"active"} and {node["state"] for node in nodes.values()} == {"online"}
    second = service.get(f"/api/status/{smaller['job_id']}").json()
    assert second["status"] == "pending" and second["queue_position"] in (1, 2)
    for job in (big, small, smaller):
        assert service.wait_until(job["job_id"], FINAL)["status"] == "completed"
        assert json.loads(service.get(f"/api/results/{job['job_id']}").json()["stdout"])["competition_id"] == "titanic"


def test_simultaneous_submissions_are_spread_over_the_nodes(service):
    import asyncio

    import httpx

    async def submit_both():
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
            return await asyncio.gather(*(
                client.post("/api/submit", params={"wait": "false"},
                            files={"code": ("solution.py", solution()), "config_file": ("config.yaml", config(expected_time=30))})
                for _ in range(2)
            ))

    answers = [answer.json() for answer in asyncio.run(submit_both())]
    assert {answer["node_id"] for answer in answers} == {0, 1}  # integers, as the API's clients read them
    assert {(answer["node_id"], answer["node_name"]) for answer in answers} == {(0, "node-0"), (1, "node-1")}
    for answer in answers:
        assert service.wait_until(answer["job_id"], FINAL)["status"] == "completed"


def test_cancel_pending_and_running_jobs_owner_only(service):
    long_jobs = [service.submit(solution(sleep=60), config(expected_time=50)).json() for _ in range(2)]
    assert {job["node_id"] for job in long_jobs} == {0, 1}
    pids = [service.wait_for_pid("alice", job["job_id"]) for job in long_jobs]
    queued = service.submit(solution(sleep=0), config(expected_time=1)).json()
    assert queued["node_id"] == 0  # equal queues: the first node
    assert service.get(f"/api/status/{queued['job_id']}").json()["queue_position"] == 1

    assert service.cancel(queued["job_id"], None).status_code == 401
    assert service.cancel(queued["job_id"], "not-a-token").status_code == 401
    denied = service.cancel(queued["job_id"], TOKENS["bob"])
    assert denied.status_code == 403 and "not yours" in denied.json()["detail"]
    pending = service.cancel(queued["job_id"], TOKENS["alice"])
    assert pending.status_code == 200 and pending.json()["status"] == "cancelled"

    assert service.get(f"/api/status/{long_jobs[0]['job_id']}").json()["status"] == "running"
    for job, pid in zip(long_jobs, pids):
        running = service.cancel(job["job_id"], TOKENS["alice"])
        assert running.status_code == 200 and running.json()["status"] == "cancelled"
        assert process_gone(pid), f"grading process {pid} still runs after cancel"
        assert service.wait_until(job["job_id"], FINAL)["status"] == "cancelled"
    again = service.cancel(long_jobs[0]["job_id"], TOKENS["alice"])
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]

    # The pending job never started: no work dir, and its upload is gone.
    assert service.get(f"/api/status/{queued['job_id']}").json()["status"] == "cancelled"
    time.sleep(2)  # the nodes are free again: a job that could start would by now
    assert not (service.results_dir / "work" / "alice" / queued["job_id"]).exists()
    assert not list((service.results_dir / "work" / "_uploads").glob("*.py"))


BAD_REQUESTS = [
    # (files, expected status, a piece of the detail)
    (dict(code=("solution.txt", solution())), 400, "code: expected a .py file"),
    (dict(code=("solution.py", b"  \n")), 400, "code: solution.py is empty"),
    (dict(code=("solution.py", b"#" * 20_000)), 413, "code: larger than"),
    (dict(code=("solution.py", b"#" * 200_000)), 413, "request: larger than"),
    (dict(code=("solution.py", b"\xff\xfe")), 400, "not UTF-8"),
    (dict(config_file=("c.yaml", b"user_id: [alice\n")), 400, "config_file: YAML does not parse"),
    (dict(config_file=("c.yaml", b"- a list\n")), 422, "config_file: expected a mapping"),
    (dict(config_file=("c.yaml", config(expected_time=None))), 422, "config_file: expected_time: Field required"),
    (dict(config_file=("c.yaml", config(expected_time="soon"))), 422, "config_file: expected_time: Input should be a valid number"),
    (dict(config_file=("c.yaml", config(competition="../etc"))), 422, "config_file: competition_id"),
    (dict(config_file=("c.yaml", config(token="alice-guess"))), 401, "token is not user 'alice'"),
    (dict(config_file=("c.yaml", config(user="mallory"))), 401, "token is not user 'mallory'"),
    (dict(config_file=None), 422, "config_file: Field required"),
]


@pytest.mark.parametrize("files, status, detail", BAD_REQUESTS)
def test_bad_submissions_are_one_line_4xx(service, files, status, detail):
    import httpx

    parts = {"code": ("solution.py", solution()), "config_file": ("config.yaml", config()), **files}
    parts = {name: part for name, part in parts.items() if part is not None}
    answer = httpx.post(f"{service.url}/api/submit", params={"wait": "false"}, files=parts, timeout=30)
    assert answer.status_code == status, answer.text
    assert isinstance(answer.json()["detail"], str) and detail in answer.json()["detail"]
    assert "\n" not in answer.json()["detail"] and TOKENS["alice"] not in answer.text


@pytest.mark.parametrize("path", ["/api/status/{}", "/api/results/{}"])
@pytest.mark.parametrize("job_id", ["8d3c5d0e-6f4e-4a53-9d38-0b8e33f4b4a1", "not-a-uuid"])
def test_unknown_job_is_404(service, path, job_id):
    answer = service.get(path.format(job_id))
    assert answer.status_code == 404 and answer.json()["detail"] == f"job {job_id}: not found"
    assert service.cancel(job_id, TOKENS["alice"]).status_code == 404


def test_bad_query_is_422(service):
    answer = service.get("/api/jobs", status="done")
    assert answer.status_code == 422 and answer.json()["detail"].startswith("status: ")
    assert service.get("/docs").status_code == 200


def readme_curl_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- grading-curl -->", 2)[1]
    script = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    return [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_curl_examples(service, tmp_path):
    (tmp_path / "solution.py").write_bytes(solution(sleep=2))
    (tmp_path / "config.yaml").write_bytes(config())
    script = "set -e\n" + "".join(f"{line}\necho\n" for line in readme_curl_block())
    env = {**os.environ, "URL": service.url, "TOKEN": TOKENS["alice"]}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    sync, status, results, cancel, nodes, jobs = answers
    assert sync["status"] == "completed" and json.loads(sync["stdout"])["score"] == len(solution(sleep=2))
    assert status["status"] in ("pending", "running") and results["job_id"] == status["job_id"]
    assert cancel == {"message": cancel["message"], "status": "cancelled"}
    assert len(nodes["nodes"]) == 2 and all(job["user_id"] == "alice" for job in jobs["jobs"])
    assert service.wait_until(status["job_id"], FINAL)["status"] == "cancelled"


def test_cli_client(service, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALQ_GRADER_URL", service.url)
    source = tmp_path / "solution.py"
    source.write_bytes(solution())
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(config(token=None))  # the token comes from EVALQ_GRADER_TOKEN
    monkeypatch.setenv("EVALQ_GRADER_TOKEN", TOKENS["alice"])
    runner = CliRunner()
    submitted = runner.invoke(app, ["grade", "submit", str(source), "--config", str(cfg)])
    assert submitted.exit_code == 0, submitted.output
    assert json.loads(submitted.stdout) == {"competition_id": "titanic", "score": len(solution())}

    queued = runner.invoke(app, ["grade", "submit", str(source), "--config", str(cfg), "--no-wait"])
    job_id = queued.stdout.strip()
    assert json.loads(runner.invoke(app, ["grade", "status", job_id]).stdout)["job_id"] == job_id
    jobs = json.loads(runner.invoke(app, ["grade", "jobs", "--user", "alice"]).stdout)["jobs"]
    assert jobs[0]["job_id"] == job_id
    assert len(json.loads(runner.invoke(app, ["grade", "nodes"]).stdout)["nodes"]) == 2

    monkeypatch.setenv("EVALQ_GRADER_TOKEN", TOKENS["bob"])
    denied = runner.invoke(app, ["grade", "cancel", job_id])
    assert denied.exit_code == 2 and denied.stderr.strip() == f"error: 403: job {job_id}: not yours"
    service.wait_until(job_id, FINAL)
    results = runner.invoke(app, ["grade", "results", job_id])
    assert results.exit_code == 0 and json.loads(results.stdout)["score"] == len(solution())
    missing = runner.invoke(app, ["grade", "status", "nope"])
    assert missing.exit_code == 2 and missing.stderr.strip() == "error: 404: job nope: not found"


def test_jobs_outlive_an_api_restart(service):
    """Stop `evalq grader serve` while a job runs; the job finishes; the new server reports it."""
    job = service.submit(solution(sleep=4), config(expected_time=10)).json()
    service.wait_for_pid("alice", job["job_id"])
    service.stop()
    service.start(max_wait_seconds=1)
    assert service.wait_until(job["job_id"], FINAL)["status"] == "completed"
    results = service.get(f"/api/results/{job['job_id']}").json()
    assert json.loads(results["stdout"])["score"] == len(solution(sleep=4))

    # This server waits at most 1 s: a longer job is answered while it still runs, and it goes on.
    slow = service.submit(solution(sleep=3), config(expected_time=10), wait=True).json()
    assert slow["status"] in ("pending", "running") and slow["job_id"] in slow["message"]
    assert service.wait_until(slow["job_id"], FINAL)["status"] == "completed"


def test_a_cluster_node_joins_with_evalq_grader_node(service, tmp_path):
    """The cluster recipe: `evalq grader node` on a GPU node; idle nodes are taken in name order."""
    import asyncio
    import signal
    import sys

    from prefect import get_client

    from flows.naming import GRADER_POOL

    argv = [sys.executable, "-m", "flows.cli", "grader", "node", "--name", "gpu-a", "--ip", "10.1.2.3",
            "--log", str(tmp_path / "node.log")]
    node = subprocess.Popen(argv, env={**os.environ, "PREFECT_API_URL": service.api_url}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            nodes = {entry["node_name"]: entry for entry in service.get("/api/nodes").json()["nodes"]}
            if nodes.get("gpu-a", {}).get("status") == "active":
                break
            time.sleep(0.5)
        assert nodes["gpu-a"]["ip"] == "10.1.2.3" and nodes["gpu-a"]["state"] == "online"
        assert nodes["gpu-a"]["node_id"] > max(nodes["node-0"]["node_id"], nodes["node-1"]["node_id"])
        answer = service.submit(solution(), config(expected_time=5)).json()
        assert answer["node_name"] == "gpu-a" and answer["node_id"] == nodes["gpu-a"]["node_id"]
        assert service.wait_until(answer["job_id"], FINAL)["status"] == "completed"
    finally:
        os.kill(node.pid, signal.SIGINT)
        assert node.wait(60) == 0

    async def decommission_then_register_another():
        from flows.grader.nodes import register_node

        async with get_client() as client:
            queue = await client.read_work_queue_by_name("gpu-a", work_pool_name=GRADER_POOL)
            await client.delete_work_queue_by_id(queue.id)
            later = await register_node(client, "gpu-b", "10.1.2.4")
            await client.delete_work_queue_by_id((await client.read_work_queue_by_name("gpu-b", work_pool_name=GRADER_POOL)).id)
            return later

    assert asyncio.run(decommission_then_register_another()) > nodes["gpu-a"]["node_id"]
    assert "gpu-a" not in {entry["node_name"] for entry in service.get("/api/nodes").json()["nodes"]}
    # Its jobs keep its id (a node registered later got a new one, above).
    assert service.get(f"/api/status/{answer['job_id']}").json()["node_id"] == nodes["gpu-a"]["node_id"]


def test_a_job_cancelled_between_its_claim_and_its_start_is_not_graded(prefect_server, tmp_path):
    """The cancel lands while a worker holds the run (Pending) and the API discards the upload:
    Prefect 3.8.8 still lets the engine start the run (Cancelled -> Running). It ends Cancelled,
    not Failed, and its command never runs."""
    from prefect import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Cancelled, Pending

    from flows.grader import store
    from flows.grader.flow import grade_solution
    from flows.grader.models import GradingJob

    marker = tmp_path / "graded"
    staged = store.stage_upload(tmp_path, "print('hi')\n")
    job = GradingJob(user_id="alice", project_id="p", competition_id="titanic", expected_time=1, timeout_seconds=20,
                     staged_solution=str(staged), results_dir=str(tmp_path),
                     grade_argv=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"])

    async def claimed_then_cancelled():
        async with get_client() as client:
            run = await client.create_flow_run(grade_solution, parameters={"job": job.model_dump(mode="json")})
            await client.set_flow_run_state(run.id, Pending())
            await client.set_flow_run_state(run.id, Cancelled(message="cancelled by its owner before it started"))
            return await client.read_flow_run(run.id)

    run = asyncio.run(claimed_then_cancelled())
    store.discard_upload(staged)
    state = run_flow(grade_solution, flow_run=run, parameters={"job": job}, return_type="state")
    assert state.type.value == "CANCELLED", state
    assert not marker.exists() and not (tmp_path / "work" / "alice" / str(run.id)).exists()
