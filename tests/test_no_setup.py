"""The grading API and the GPU queue as a new user meets them: a machine with nothing set up (an
empty home, no PREFECT_API_URL, no server), the first command starts what it needs, the
documentation its users bring (tests/seeds/, copied verbatim from the systems evalq replaces)
runs as written, and `evalq queue -K` leaves no process behind (read from the process table).

Stand-ins, said here once: a fake `nvidia-smi` (tests/fake_bin; there is no GPU), a grader script
of ours at the seed's path (`src/dojo/grade_code.py`), and, for the seed's polling loop only, a
`sleep` that sleeps at most 1 s (its `sleep 300` would make the test wait 5 minutes a round).
"""

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
from uuid import uuid4

import httpx
import kit
import pytest

from flows.runtime.host import free_port

SEEDS = Path(__file__).resolve().parent / "seeds"
FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"
BOUND = 300.0
"""Upper bound for a fresh server, its runners and a job (a failure bound, not a timing goal)."""


class BareMachine:
    """A user's machine with nothing set up. Every process started from here carries a marker
    in its environment, so the process table says what is left of them."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.marker = f"EVALQ_TEST_MACHINE={uuid4().hex}"
        env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "EVALQ_"))}
        for name in ("TS_VISIBLE_DEVICES", "FAKE_NVIDIA_SMI_CSV", "FAKE_NVIDIA_SMI_FILE"):
            env.pop(name, None)
        env.update({
            "HOME": str(self.home), "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "XDG_CACHE_HOME": str(self.home / ".cache"), "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(FAKE_BIN), os.environ["PATH"]]),
            "NO_GCE_CHECK": "true", self.marker.split("=")[0]: self.marker.split("=")[1],
        })
        self.env = env
        self.server_home = self.home / ".local" / "state" / "evalq" / "server"  # the default: nothing names it

    def bash(self, script: str, cwd: Path, timeout: float = BOUND, env: dict | None = None) -> subprocess.CompletedProcess:
        """`script` as the user types it."""
        return subprocess.run(["bash", "-c", script], cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)

    def ok(self, script: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
        done = self.bash(script, cwd, **kwargs)
        assert done.returncode == 0, f"{script}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr and "warning" not in done.stderr.lower(), done.stderr
        return done

    def api_url(self) -> str:
        from flows.runtime.server_record import read_record

        return read_record(self.server_home).api_url

    def processes(self) -> list[str]:
        """The live processes (zombies aside) started from this machine: pid and command line."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.marker.encode() in environ and state != "Z":
                found.append(f"{pid}: {argv[:200]}")
        return found

    def wait_for_no_process(self, bound: float = 60) -> None:
        deadline = time.monotonic() + bound
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not self.processes(), "left behind:\n" + "\n".join(self.processes())

    def stop_everything(self) -> None:
        """After a failed test: nothing of this machine may outlive it."""
        for line in self.processes():
            try:
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def machine(tmp_path):
    bare = BareMachine(tmp_path)
    try:
        yield bare
    finally:
        bare.stop_everything()


def server_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("Prefect server: ")]
    return line


# --- the grading API -------------------------------------------------------------------------

GRADE_CODE = """
import json, re, sys, time
solution, competition, results = sys.argv[1:4]
started = time.time()
found = re.search(r"SLEEP=([0-9.]+)", open(solution).read())
time.sleep(float(found.group(1)) if found else 0)
report = {"competition_id": competition, "score": 0.49272, "gold_threshold": 0.97908, "silver_threshold": 0.76482,
          "bronze_threshold": 0.6921, "any_medal": False, "gold_medal": False, "silver_medal": False,
          "bronze_medal": False, "above_median": False, "submission_exists": True, "valid_submission": True}
with open(results, "w") as handle:
    json.dump({"success": True, "exit_code": 0, "timed_out": False, "exec_time": round(time.time() - started, 2),
               "valid_solution": True, "test_fitness": 0.49272, "grading_report": report}, handle)
"""
SLEEP_AT_MOST_A_SECOND = "#!/bin/sh\nexec /bin/sleep 1\n"


def seed_blocks(document: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (SEEDS / document).read_text(encoding="utf-8"), re.S)


def json_answers(text: str) -> list[dict]:
    """The JSON documents a script printed one after another (curl adds no newline)."""
    decoder, answers, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        answer, end = decoder.raw_decode(text, at)
        answers.append(answer)
        at = end
    return answers


def parsed(block: str) -> dict | None:
    try:
        return json.loads(block)
    except ValueError:
        return None


def kind(value) -> str:
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def shaped_as_documented(ours: dict, documented: dict) -> None:
    """Every field the seed's answer shows, with the same JSON type (null on either side aside)."""
    missing = set(documented) - set(ours)
    assert not missing, f"fields missing: {missing} in {ours}"
    for key, value in documented.items():
        if value is not None and ours[key] is not None:
            assert kind(ours[key]) == kind(value), f"{key}: {ours[key]!r} is not a {kind(value)} like {value!r}"


def test_grader_serve_on_a_bare_machine_then_the_seed_documents_examples(machine):
    dojo = machine.root / "aira-dojo"  # where `serve` starts: the grade command's relative path resolves there
    (dojo / "src" / "dojo").mkdir(parents=True)
    (dojo / "src" / "dojo" / "grade_code.py").write_text(GRADE_CODE)
    (dojo / "TOKENS.yaml").write_text("sarang: sarang\n")  # the seed's default credentials
    port = free_port()
    serve_log = machine.root / "serve.log"
    with open(serve_log, "wb") as log:
        serve = subprocess.Popen(["evalq", "grader", "serve", "--tokens", "TOKENS.yaml", "--nodes", "2", "--port", str(port)],
                                 cwd=dojo, env=machine.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            assert serve.poll() is None, serve_log.read_text()[-3000:]
            try:
                nodes = httpx.get(f"{url}/api/nodes", timeout=5).json()["nodes"]
            except httpx.HTTPError:
                return False
            return len(nodes) == 2 and all(node["status"] == "active" for node in nodes) and nodes

        nodes = kit.wait_for(ready, BOUND, "the grading API and its 2 nodes", interval=0.5)
        assert [(node["node_id"], node["node_name"]) for node in nodes] == [(0, "node-0"), (1, "node-1")]
        line = server_line(serve_log.read_text())
        assert line.endswith("(your evalq server, started now; it stays up (`evalq server stop`))"), line
        run_the_seed_documents_examples(machine, dojo, port)
        an_overdue_job_completes_and_is_flagged(url)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    assert serve.returncode == 0, f"SIGTERM skipped the node runners' stop ({serve.returncode})"
    assert "Traceback" not in serve_log.read_text(), serve_log.read_text()[-3000:]
    machine.ok("evalq server stop", dojo)
    machine.wait_for_no_process()


def run_the_seed_documents_examples(machine: BareMachine, dojo: Path, port: int) -> None:
    """Every curl and Python example of the grading API's documentation, as written but for the
    port (and the placeholders YOUR_JOB_ID, YOUR_TOKEN)."""
    work = machine.root / "client"
    work.mkdir()
    (work / "bin").mkdir()
    (work / "bin" / "sleep").write_text(SLEEP_AT_MOST_A_SECOND)
    (work / "bin" / "sleep").chmod(0o755)
    bash, (python_client,), (config_yaml,) = seed_blocks("grading-api.md", "bash"), seed_blocks("grading-api.md", "python"), seed_blocks("grading-api.md", "yaml")
    documented = [answer for block in seed_blocks("grading-api.md", "json") if (answer := parsed(block)) is not None]
    synced, accepted, _timeout, status_doc, results_doc, cancel_doc = documented  # nodes and jobs end in "...": by hand
    (work / "config.yaml").write_text(config_yaml)
    (work / "your_solution.py").write_text("# SLEEP=15\nprint('hello')\n")

    def run(block: str, job_id: str = "", **kwargs) -> subprocess.CompletedProcess:
        script = block.replace("localhost:8001", f"localhost:{port}").replace("YOUR_JOB_ID", job_id).replace("YOUR_TOKEN", "sarang")
        return machine.ok("set -e\n" + script, work, **kwargs)

    sync, queued = json_answers(run(bash[0]).stdout)  # 1. Submit Job: wait=true, then wait=false
    shaped_as_documented(sync, synced)
    shaped_as_documented(queued, accepted)
    assert sync["status"] == "completed" and json.loads(sync["stdout"])["test_fitness"] == 0.49272
    assert queued["status"] == "pending" and queued["node_id"] in (0, 1)
    job = queued["job_id"]
    (status,) = json_answers(run(bash[1], job).stdout)  # 2. Get Job Status
    shaped_as_documented(status, status_doc)
    assert status["status"] in ("pending", "running") and status["overdue"] is False
    (results,) = json_answers(run(bash[2], job).stdout)  # 3. Get Job Results
    shaped_as_documented(results, results_doc)
    (cancel,) = json_answers(run(bash[3], job).stdout)  # 4. Cancel Job (Bearer YOUR_TOKEN)
    assert cancel == {"message": cancel["message"], "status": "cancelled"} and set(cancel) == set(cancel_doc)
    (nodes,) = json_answers(run(bash[4]).stdout)  # 5. List GPU Nodes
    for node in nodes["nodes"]:
        assert {"node_id", "ip", "queue_length", "total_wait_time", "status"} <= set(node) and node["status"] == "active"
        assert isinstance(node["node_id"], int) and node["ip"] == "127.0.0.1"
    everything, mine, completed, ten = json_answers(run(bash[5]).stdout)  # 6. List Jobs, four ways
    assert {entry["job_id"] for entry in mine["jobs"]} == {sync["job_id"], job} <= {entry["job_id"] for entry in everything["jobs"]}
    assert [entry["job_id"] for entry in completed["jobs"]] == [sync["job_id"]] and len(ten["jobs"]) <= 10
    assert all(isinstance(entry["node_id"], int) and entry["user_id"] == "sarang" for entry in everything["jobs"])

    example1 = run(bash[6])  # Example 1: submit and grade (sync), parse with python3
    assert example1.stdout.splitlines()[-3:] == ["Score: 0.49272", example1.stdout.splitlines()[-2], "Gold medal: False"]
    assert re.fullmatch(r"Execution time: [0-9.]+s", example1.stdout.splitlines()[-2])
    (work / "long_training.py").write_text("# SLEEP=4\n")
    example2 = run(bash[7], env={"PATH": f"{work / 'bin'}{os.pathsep}{machine.env['PATH']}"})  # Example 2: async, poll
    lines = example2.stdout.splitlines()
    assert re.search(r"Job ID: [0-9a-f-]{36}$", example2.stdout, re.M) and lines[-3].endswith("Status: completed")
    assert lines[-2] == "Final Score: 0.49272" and re.fullmatch(r"Execution time: [0-9.]+s", lines[-1]), example2.stdout
    (listing,) = json_answers(run(bash[8]).stdout)  # Example 3: nodes through python3 -m json.tool
    assert [node["node_id"] for node in listing["nodes"]] == [0, 1]

    (work / "client.py").write_text(python_client.replace("localhost:8001", f"localhost:{port}"))
    client = machine.ok("python client.py", work)  # the Python client example (requests)
    assert client.stdout.splitlines()[:3] == ["Score: 0.49272", client.stdout.splitlines()[1], "Valid solution: True"]
    assert "  Gold: False (threshold: 0.97908)" in client.stdout.splitlines()


def an_overdue_job_completes_and_is_flagged(url: str) -> None:
    """expected_time 2 s, the grading takes 10 s: it runs to the end, flagged `overdue`, not killed."""
    config = ('competition_id: "random-acts-of-pizza"\nproject_id: "p"\nuser_id: "sarang"\nexpected_time: 2\n'
              'token: "sarang"\n')
    files = {"code": ("slow.py", b"# SLEEP=10\n"), "config_file": ("config.yaml", config.encode())}
    job = httpx.post(f"{url}/api/submit", params={"wait": "false"}, files=files, timeout=60).json()["job_id"]

    def overdue_while_running():
        status = httpx.get(f"{url}/api/status/{job}", timeout=30).json()
        assert status["status"] in ("pending", "running"), status
        return status["status"] == "running" and status["overdue"] and status

    kit.wait_for(overdue_while_running, BOUND, "the job running past its expected_time", interval=0.5)
    done = kit.wait_for(lambda: (s := httpx.get(f"{url}/api/status/{job}", timeout=30).json())["status"] not in ("pending", "running") and s,
                        BOUND, "the slow job's end", interval=0.5)
    assert (done["status"], done["exit_code"], done["overdue"], done["expected_time"]) == ("completed", 0, True, 2)
    results = httpx.get(f"{url}/api/results/{job}", timeout=30).json()
    assert results["overdue"] is True and json.loads(results["stdout"])["exec_time"] >= 10


# --- the GPU queue ---------------------------------------------------------------------------

RUN_TTS_EVAL = """
import json, os, sys, time
seed = next(arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("system.seed="))
start = time.time()
time.sleep(2)
os.makedirs("records", exist_ok=True)
with open(f"records/seed{seed}.json", "w") as handle:
    json.dump({"argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, handle)
sys.exit(3 if seed == "43" else 0)  # seed 43 fails: `-D` (task-spooler's meaning) still runs seed 44
"""
RECORD = """
import json, os, sys, time
name, seconds = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0
os.makedirs("records", exist_ok=True)
with open(f"records/{name}.start", "w") as handle:
    json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": time.time()}, handle)
time.sleep(seconds)
"""
IDLE_GPUS = "0, 81920, 0\n1, 81920, 0\n"
PARTLY_USED_GPUS = "0, 81920, 12000\n1, 81920, 40000\n"
"""GPU 0 has 85 % of its memory free: free at a threshold of 0.8, not at the default 0.9; GPU 1 never."""


def seed_chain() -> str:
    """The seed's dependency chain (Step 2), as written but for `tsp` -> `evalq` and the
    placeholder `<config>` (which bash would read as redirections)."""
    block = next(block for block in seed_blocks("task-spooler-gpu-queue.md", "bash") if "# Step 2" in block)
    block = block.split("# Step 2: submit manually with dependency chains\n", 1)[1]
    return block.replace("tsp -S 1", "evalq queue slots 1").replace("$(tsp ", "$(evalq submit ").replace("<config>", "tts")


def queue_entry(api_url: str, queue_id: int):
    from prefect.client.orchestration import PrefectClient

    from workpools.local.entries import find_entry

    async def read():
        async with PrefectClient(api=api_url) as client:
            return await find_entry(client, queue_id)

    return asyncio.run(read())


def test_the_gpu_queue_on_a_bare_machine_with_task_spooler_habits_then_k(machine):
    work = machine.root / "project"
    (work / "scripts").mkdir(parents=True)
    (work / "scripts" / "run_tts_eval.py").write_text(RUN_TTS_EVAL)
    (work / "scripts" / "record.py").write_text(RECORD)
    gpus = machine.root / "gpus.csv"
    gpus.write_text(IDLE_GPUS)
    machine.env["FAKE_NVIDIA_SMI_FILE"] = str(gpus)
    queue_home = machine.home / ".evalq" / "queue"
    records = work / "records"
    try:
        first = machine.ok("evalq submit -L first python scripts/record.py first", work)
        assert first.stdout == "1\n"  # the queue id alone
        api_url = machine.api_url()
        assert server_line(first.stderr).endswith("(your evalq server, started now; it stays up (`evalq server stop`))")
        assert "created deployment run-command/local on work pool evalq-local (the queue's first use on this server)" in first.stderr
        assert re.search(r"started the queue's worker \(pid \d+, pool evalq-local; it stops after 600 s without jobs", first.stderr)
        assert re.search(r"^queued job 1: first \(flow run [0-9a-f-]{36}\)$", first.stderr, re.M)

        chain = machine.ok(seed_chain() + 'echo "$J0 $J1 $J2"\n', work)
        assert chain.stdout.splitlines()[0].endswith(": 1 slots, 0 in use")  # `tsp -S 1`
        assert chain.stdout.splitlines()[-1] == "2 3 4"  # each J=$(...) took the queue id alone
        assert "started the queue's worker" not in chain.stderr  # it is up: one worker
        ends = {seed: kit.wait_for(lambda s=seed: (records / f"seed{s}.json").exists() and json.loads((records / f"seed{s}.json").read_text()),
                                   BOUND, f"seed {seed}", interval=0.5) for seed in (42, 43, 44)}
        assert ends[43]["start"] >= ends[42]["end"] and ends[44]["start"] >= ends[43]["end"], ends
        assert all(run["cuda"] == "0" and run["argv"][:2] == ["--config-path=../config", "--config-name=tts"] for run in ends.values())
        states = {queue_id: kit.wait_for(lambda q=queue_id: (e := queue_entry(api_url, q)) and e.status.is_final and e.status.value,
                                         BOUND, f"job {queue_id}'s end") for queue_id in (1, 2, 3, 4)}
        assert states == {1: "finished", 2: "finished", 3: "failed", 4: "finished"}

        gpus.write_text(PARTLY_USED_GPUS)
        (waiting_id,) = map(int, machine.ok("evalq submit -G 1 python scripts/record.py threshold", work).stdout.split())
        kit.wait_for(lambda: queue_entry(api_url, waiting_id).status.value == "waiting GPUs", BOUND, "the job to wait for a free GPU")
        time.sleep(3)
        assert not (records / "threshold.start").exists(), "a GPU with 15 % of its memory used counted as free at 0.9"
        assert machine.ok("evalq queue gpu-free-threshold 0.8", work).stdout.strip().endswith("GPUs count as free with 80% of their memory unused")
        started = kit.wait_for(lambda: (records / "threshold.start").exists() and json.loads((records / "threshold.start").read_text()),
                               BOUND, "the job to start at the new threshold", interval=0.5)
        assert started["cuda"] == "0"

        gpus.write_text(IDLE_GPUS)
        machine.ok("TS_VISIBLE_DEVICES=1 evalq submit -G 1 python scripts/record.py visible", work)
        visible = kit.wait_for(lambda: (records / "visible.start").exists() and json.loads((records / "visible.start").read_text()),
                               BOUND, "the job limited to GPU 1", interval=0.5)
        assert visible["cuda"] == "1"  # GPU 0 was free too: TS_VISIBLE_DEVICES kept it from the job

        (long_id,) = map(int, machine.ok("evalq submit python scripts/record.py long 600", work).stdout.split())
        kit.wait_for(lambda: queue_entry(api_url, long_id).status.value == "running", BOUND, "the long job to run")
        shutdown = machine.ok("evalq queue -K", work)
    except BaseException:
        for log in ("worker.log", "runner.log"):
            print(f"--- {log}\n" + ((queue_home / log).read_text()[-4000:] if (queue_home / log).exists() else "(none)"))
        raise
    lines = shutdown.stdout.splitlines()
    assert lines[0] == "cancelled 1 job (1 running)"
    assert re.fullmatch(r"stopped the queue's worker \(pid \d+\)", lines[1]), lines
    assert lines[2] == f"stopped the Prefect server a queue command had started ({api_url})", lines
    machine.wait_for_no_process()


def test_a_worker_started_for_the_queue_stops_once_idle(prefect_server, tmp_path):
    """The worker `evalq submit` starts stays while its pool has unfinished runs and goes after its
    idle timeout, taking its runner along and giving up its record (the next submit starts one)."""
    from flows.runtime.host import process_alive
    from flows.runtime.work_pools import apply_work_pool
    from workpools.local import WORK_POOL_TYPE, base_job_template
    from workpools.local.service import ensure_worker, live_worker

    pool = "idle-queue-test"

    async def make_pool():
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            await apply_work_pool(client, pool, WORK_POOL_TYPE, base_job_template())

    asyncio.run(make_pool())
    record = ensure_worker(prefect_server.api_url, pool, tmp_path, idle_timeout=3, slots=1)
    assert record is not None and live_worker(tmp_path).pid == record.pid
    assert ensure_worker(prefect_server.api_url, pool, tmp_path, idle_timeout=3, slots=1) is None  # one worker
    kit.wait_for(lambda: not process_alive(record.pid), 120, "the idle worker to stop", interval=0.5)
    assert live_worker(tmp_path) is None and not (tmp_path / "worker.json").exists()
    log = (tmp_path / "worker.log").read_text()
    assert log.rstrip().splitlines()[-1] == "evalq queue worker stopped (no job for 3 s)", log
    assert "Traceback" not in log and "error" not in log.lower()
    runner = f"evalq-queue-{os.uname().nodename}-{record.pid}"
    assert not [pid for pid in filter(str.isdigit, os.listdir("/proc"))
                if runner.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()], "its runner outlived it"
