"""`evalq queue` (task-spooler's verbs) on real jobs: the session's Prefect server, a real
`prefect worker` on the local pool, real processes, and the fake 2-GPU `nvidia-smi` (the only
stand-in: there is no GPU here)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli.root import app
from workpools.local.entries import QueueEntry, Status, find_entry
from workpools.local.job import gpu_limit
from workpools.local.output import LineTail, clean_line
import kit

FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"
WORKER_POOL = "gpu-queue-test"
BOUND = 180.0
"""Upper bound for waiting on the worker (a failure bound, not a timing goal)."""

JOB = r"""
import json, os, signal, subprocess, sys, time
name, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
def record(kind):
    facts = {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pgid": os.getpgid(0), "child": child.pid, "time": time.time()}
    with open(os.path.join(out, f".{name}.{kind}"), "w") as f:
        json.dump(facts, f)
    os.replace(os.path.join(out, f".{name}.{kind}"), os.path.join(out, f"{name}.{kind}"))
def stop(signum, frame):
    record("killed")
    raise SystemExit(128 + signum)
signal.signal(signal.SIGTERM, stop)
record("start")
time.sleep(seconds)
record("end")
"""


# --- fast checks, no server -------------------------------------------------------------------


class TestOutputTail:
    def test_lines_as_they_complete(self, tmp_path):
        path = tmp_path / "out"
        tail = LineTail(path)
        assert tail.lines() == []  # not there yet
        path.write_bytes(b"one\ntw")
        assert tail.lines() == ["one"]
        with open(path, "ab") as handle:
            handle.write(b"o\nthree")
        assert tail.lines() == ["two"]
        assert tail.lines(final=True) == ["three"]

    def test_progress_bars_keep_their_last_update_and_long_lines_are_cut(self):
        assert clean_line(b"10%\r50%\r100%\r") == "100%"
        assert clean_line(b"x" * 5000).endswith(" [...]") and len(clean_line(b"x" * 5000)) < 4100
        assert clean_line(b"\xff ok") == "\ufffd ok"


class TestEnvironmentFile:
    def test_private_and_read_back(self, tmp_path):
        from workpools.local.environment import capture_environment, load_environment

        path = capture_environment(tmp_path, {"TOKEN": "s3cret", "A": "b"})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert load_environment(path) == {"TOKEN": "s3cret", "A": "b"}

    def test_a_missing_file_names_the_file_never_a_value(self, tmp_path):
        from workpools.local.environment import EnvironmentFileError, capture_environment, load_environment

        path = capture_environment(tmp_path, {"TOKEN": "s3cret"})
        path.write_text('{"TOKEN": 1}')
        with pytest.raises(EnvironmentFileError, match="not a JSON object of strings") as bad:
            load_environment(path)
        path.unlink()
        with pytest.raises(EnvironmentFileError, match="is gone") as gone:
            load_environment(path)
        assert "s3cret" not in str(bad.value) + str(gone.value)


class TestSigterm:
    def test_sigterm_stops_the_job_after_its_cleanup_and_restores_the_handler(self, tmp_path):
        """What a worker's kill_infrastructure sends: the body is cancelled and its cleanup finishes."""
        import signal

        from workpools.local.command import run_argv
        from workpools.local.stopping import TERMINATED, Stopped, run_unless_stopped

        pid_file = tmp_path / "pid"
        before = signal.getsignal(signal.SIGTERM)

        async def job():
            argv = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
            return await run_argv(argv, dict(os.environ))

        async def main():
            loop = asyncio.get_running_loop()
            work = run_unless_stopped(None, None, job(), every=1.0)
            waiter = asyncio.ensure_future(work)
            while not pid_file.exists() or not pid_file.read_text():
                await asyncio.sleep(0.05)
            loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
            return await waiter

        assert asyncio.run(main()) == Stopped(TERMINATED)
        assert not group_alive(int(pid_file.read_text())), "the command outlived the stop"
        assert signal.getsignal(signal.SIGTERM) is before


class TestSlotsArgument:
    @pytest.mark.parametrize("text, slots", [("1", 1), ("12", 12), ("unlimited", 1_000_000)])
    def test_parse(self, text, slots):
        from workpools.local.slots import parse_slots

        assert parse_slots(text) == slots

    @pytest.mark.parametrize("text", ["0", "-1", "two", ""])
    def test_bad(self, text):
        from workpools.local.slots import parse_slots

        with pytest.raises(ValueError):
            parse_slots(text)


class TestPlaceInLine:
    """Which runs `my_turn` counts as ahead in line (besides those waiting for GPUs)."""

    @staticmethod
    def entry(status: Status, host: str | None = "here", seconds_ago: float = 1.0, depends: bool = False) -> QueueEntry:
        from datetime import datetime, timedelta, timezone
        from uuid import uuid4

        from workpools.local.job import CommandJob

        job = CommandJob(argv=["x"], gpus=1, depends_on=[uuid4()] if depends else [])
        since = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
        return QueueEntry(
            run_id=uuid4(), queue_id=1, name="x", job=job, status=status, state_name="", message=None,
            state_since=since, host=host, held_gpus=None, submitted=since, command_started=None, ended=None,
        )

    def test_waiting_here_counts_waiting_elsewhere_does_not(self):
        from workpools.local.flow import in_gpu_queue

        assert in_gpu_queue(self.entry(Status.WAITING_GPUS), "here", time.time())
        assert not in_gpu_queue(self.entry(Status.WAITING_GPUS, host="there"), "here", time.time())

    def test_a_job_being_started_keeps_its_place_unless_stuck_or_dependent(self):
        from workpools.local.flow import STARTUP_GRACE_SECONDS, in_gpu_queue

        now = time.time()
        assert in_gpu_queue(self.entry(Status.QUEUED, host=None), "here", now)
        assert in_gpu_queue(self.entry(Status.STARTING, host=None), "here", now)
        assert not in_gpu_queue(self.entry(Status.STARTING, host=None, seconds_ago=STARTUP_GRACE_SECONDS + 1), "here", now)
        assert not in_gpu_queue(self.entry(Status.QUEUED, host=None, depends=True), "here", now)
        assert not in_gpu_queue(self.entry(Status.RUNNING), "here", now)


# --- on the session's Prefect server with a real worker ---------------------------------------


@pytest.fixture(scope="module")
def queue_worker(prefect_server, tmp_path_factory):
    """`prefect worker start` on a pool of its own, with the fake nvidia-smi on its PATH."""
    from flows.runtime.local_stack import start_worker
    from flows.runtime.process_groups import terminate_group

    log = tmp_path_factory.mktemp("queue-worker") / "worker.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
        patch.delenv("FAKE_NVIDIA_SMI_CSV", raising=False)
        worker = start_worker(prefect_server.api_url, limit=10, log_path=log, work_pool=WORKER_POOL)
    try:
        yield log
    finally:
        terminate_group(worker)


@pytest.fixture
def queue(queue_worker, tmp_path, monkeypatch):
    """The README recipe on this test's pool; at the end, nothing of the test still runs."""
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FAKE_NVIDIA_SMI_CSV", raising=False)
    monkeypatch.setenv("EVALQ_QUEUE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVALQ_QUEUE_RUNNER", "0")  # the module's worker serves the pool
    result = CliRunner().invoke(app, ["workpools", "apply", "--kind", "local", "--name", WORKER_POOL])
    assert result.exit_code == 0, result.output
    helper = Queue(tmp_path, queue_worker)
    yield helper
    for queue_id in helper.submitted:
        found = helper.entry(queue_id)
        if found is not None and not found.status.is_final:
            CliRunner().invoke(app, ["queue", "kill", str(queue_id)])
    assert helper.gpu_slots() == [0, 0], "a test left GPU leases behind"


class Queue:
    """Drives `evalq submit` / `evalq queue` like a user, and reads what happened."""

    def __init__(self, out: Path, worker_log: Path):
        self.out = out
        self.worker_log = worker_log
        self.submitted: list[int] = []

    def submit(self, *args: str) -> int:
        result = CliRunner().invoke(app, ["submit", *args])
        assert result.exit_code == 0, result.output
        queue_id = int(result.stdout.splitlines()[0].split("\t")[0])
        self.submitted.append(queue_id)
        return queue_id

    def job(self, name: str, seconds: float) -> list[str]:
        return ["--", sys.executable, "-c", JOB, name, str(seconds), str(self.out)]

    def entry(self, queue_id: int) -> QueueEntry | None:
        async def read():
            from prefect.client.orchestration import get_client

            async with get_client() as client:
                return await find_entry(client, queue_id)

        return asyncio.run(read())

    def wait_for(self, what: str, check, bound: float = BOUND):
        return kit.wait_for(check, bound, what, interval=0.2,
                            detail=lambda: f"worker log tail:\n{self.worker_log.read_text()[-3000:]}")

    def wait_status(self, queue_id: int, *statuses: Status) -> QueueEntry:
        return self.wait_for(f"job {queue_id} {statuses}", lambda: (e := self.entry(queue_id)) and e.status in statuses and e)

    def facts(self, name: str, kind: str) -> dict:
        path = self.out / f"{name}.{kind}"
        return self.wait_for(f"{path}", lambda: path.exists() and json.loads(path.read_text()))

    def gpu_slots(self) -> list[int]:
        async def read():
            from prefect.client.orchestration import get_client

            async with get_client() as client:
                host = socket.gethostname()
                return [(await client.read_global_concurrency_limit_by_name(gpu_limit(host, i))).active_slots for i in (0, 1)]

        return asyncio.run(read())


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(  # zombies do not count
        Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        for pid in os.listdir("/proc") if pid.isdigit() and _pgid(pid) == pgid
    )


def _pgid(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_kill_a_running_two_gpu_job(queue):
    """`evalq queue kill`: the command's process group dies, both GPUs come back, the run ends Cancelled."""
    queue_id = queue.submit("-G", "2", "-L", "long", *queue.job("long", 600))
    started = queue.facts("long", "start")
    assert started["cuda"] == "0,1"
    running = queue.wait_status(queue_id, Status.RUNNING)
    assert running.held_gpus == [0, 1] and queue.gpu_slots() == [1, 1]
    assert group_alive(started["pgid"])

    result = cli("queue", "kill", str(queue_id))
    assert result.exit_code == 0, result.output
    assert f"job {queue_id} cancelled" in result.stdout
    ended = queue.entry(queue_id)
    assert (ended.status, ended.state_name) == (Status.CANCELLED, "Cancelled")
    # Whoever records it first (the job's own watch, or its warm runner's cancel), the cleanup ran:
    assert not group_alive(started["pgid"]), "the command's process group outlived the kill"
    assert (queue.out / "long.killed").exists(), "the command was not asked to stop (SIGTERM)"
    assert queue.gpu_slots() == [0, 0]

    again = cli("queue", "kill", str(queue_id))
    assert again.exit_code == 2 and "already ended (cancelled)" in again.stderr


def test_prefect_flow_run_cancel_stops_a_running_job(queue):
    """The issue's own repro: `prefect flow-run cancel` (what the UI does) on a running job."""
    queue_id = queue.submit("-G", "1", "-L", "cancel-me", *queue.job("cancel-me", 600))
    started = queue.facts("cancel-me", "start")
    entry = queue.wait_status(queue_id, Status.RUNNING)
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "cancel", str(entry.run_id)],
        capture_output=True, text=True, timeout=BOUND,
    )
    assert done.returncode == 0, done.stderr
    ended = queue.wait_status(queue_id, Status.CANCELLED, Status.FAILED, Status.CRASHED, Status.FINISHED)
    assert ended.status == Status.CANCELLED, ended
    assert not group_alive(started["pgid"])
    assert queue.gpu_slots() == [0, 0]


def test_removed_or_deleted_queued_jobs_never_start(queue):
    """A job waiting for GPUs is removed (`evalq queue remove`), another one's flow run deleted (the
    Prefect UI's delete); once the GPUs free up, a job queued after both runs, and they never did."""
    blocker = queue.submit("-G", "2", "-L", "blocker", *queue.job("blocker", 600))
    queue.facts("blocker", "start")
    removed = queue.submit("-G", "1", "-L", "removed", *queue.job("removed", 0.1))
    deleted = queue.submit("-G", "1", "-L", "deleted", *queue.job("deleted", 0.1))
    later = queue.submit("-G", "1", "-L", "later", *queue.job("later", 0.1))
    for queue_id in (removed, deleted, later):
        queue.wait_status(queue_id, Status.WAITING_GPUS)

    listing = cli("queue")
    assert listing.exit_code == 0, listing.output
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("│")] for line in listing.stdout.splitlines()) if len(cells) > 8}
    assert rows[str(blocker)][2:5] == ["blocker", "running", "[0,1]"]
    assert rows[str(removed)][2:5] == ["removed", "waiting GPUs", "1"]

    refused = cli("queue", "remove", str(blocker))
    assert refused.exit_code == 2 and f"is running: `evalq queue kill {blocker}`" in refused.stderr
    result = cli("queue", "remove", str(removed))
    assert result.exit_code == 0 and f"removed job {removed}" in result.stdout, result.output
    assert queue.entry(removed) is None

    async def delete(run_id):
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            await client.delete_flow_run(run_id)

    asyncio.run(delete(queue.entry(deleted).run_id))

    assert cli("queue", "kill", str(blocker)).exit_code == 0
    assert queue.wait_status(later, Status.FINISHED, Status.FAILED).status == Status.FINISHED
    assert queue.facts("later", "end")
    assert not (queue.out / "removed.start").exists() and not (queue.out / "deleted.start").exists()
    assert queue.entry(deleted) is None
    log = queue.worker_log.read_text()
    assert "ObjectNotFound" not in log and "Traceback" not in log, log[-3000:]


def test_a_two_gpu_job_is_not_overtaken_by_a_later_one_gpu_job(queue):
    """One GPU busy, a 2-GPU job waiting, then a 1-GPU job: the free GPU stays free (the first
    command has no timeout, so nothing guarantees the 2-GPU job a start), and once both GPUs are
    free the 2-GPU job runs before the 1-GPU job."""
    first = queue.submit("-G", "1", "-L", "first", *queue.job("first", 4))
    queue.facts("first", "start")
    big = queue.submit("-G", "2", "-L", "big", *queue.job("big", 1))
    queue.wait_status(big, Status.WAITING_GPUS)
    small = queue.submit("-G", "1", "-L", "small", *queue.job("small", 0.1))
    queue.wait_status(small, Status.WAITING_GPUS, Status.RUNNING)

    queue.wait_status(small, Status.FINISHED)
    first_end, big_start, big_end, small_start = (
        queue.facts("first", "end"), queue.facts("big", "start"), queue.facts("big", "end"), queue.facts("small", "start")
    )
    assert big_start["cuda"] == "0,1"
    assert big_start["time"] >= first_end["time"]
    assert small_start["time"] >= big_end["time"], "the 1-GPU job overtook the 2-GPU job"
    assert queue.entry(first).status == Status.FINISHED


def test_output_follow_logs_and_the_captured_environment(queue, monkeypatch):
    """stdout/stderr land in the job's files and its run's logs; `output --follow` prints them as the
    job runs; the command sees the submitter's environment, which no log, parameter or info shows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    secret = "s3cr3t-token-value"
    monkeypatch.setenv("EVALQ_TEST_TOKEN", secret)  # the worker was started without it
    talk = (
        "import os, sys, time\n"
        "for i in range(3):\n"
        "    print(f'out {i}', flush=True); print(f'err {i}', file=sys.stderr, flush=True); time.sleep(0.7)\n"
        "print('token length', len(os.environ.get('EVALQ_TEST_TOKEN', '')))\n"
    )
    queue_id = queue.submit("-L", "talk", "--", sys.executable, "-c", talk)
    followed = cli("queue", "output", str(queue_id), "--follow")
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == f"out 0\nout 1\nout 2\ntoken length {len(secret)}\n"
    assert followed.stderr == "err 0\nerr 1\nerr 2\n"

    entry = queue.wait_status(queue_id, Status.FINISHED)
    home = Path(os.environ["EVALQ_QUEUE_HOME"])
    assert (home / f"{queue_id}.out").read_text() == followed.stdout
    again = cli("queue", "output", str(queue_id))
    assert (again.stdout, again.stderr) == (followed.stdout, followed.stderr)

    async def logs_and_parameters():
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[entry.run_id])))
            return [log.message for log in logs], (await client.read_flow_run(entry.run_id)).parameters

    messages, parameters = queue.wait_for(
        "the output in the run's logs", lambda: (found := asyncio.run(logs_and_parameters())) and "out 2" in found[0] and found
    )
    assert "[stderr] err 1" in messages
    info = cli("queue", "info", str(queue_id))
    assert info.exit_code == 0 and "variables captured at submit (values not shown)" in info.stdout
    for text in (json.dumps(messages), json.dumps(parameters), info.stdout):
        assert secret not in text


def test_clear_forgets_finished_jobs_only(queue):
    done = queue.submit("-L", "done", *queue.job("done", 0.1))
    broken = queue.submit("-L", "broken", "--", sys.executable, "-c", "raise SystemExit(3)")
    running = queue.submit("-G", "1", "-L", "running", *queue.job("running", 600))
    queue.wait_status(done, Status.FINISHED)
    assert "exited with code 3" in queue.wait_status(broken, Status.FAILED).message
    queue.facts("running", "start")
    env_file = Path(queue.entry(done).job.env_file)
    assert env_file.exists()

    result = cli("queue", "clear")
    assert result.exit_code == 0 and "cleared" in result.stdout
    assert queue.entry(done) is None and queue.entry(broken) is None
    assert not env_file.exists(), "a cleared job's captured environment stayed on disk"
    assert (Path(os.environ["EVALQ_QUEUE_HOME"]) / f"{done}.out").exists()  # outputs stay, as with task-spooler
    assert queue.entry(running).status == Status.RUNNING


def test_slots_limit_how_many_run_at_once(queue):
    assert "unlimited slots" in cli("queue", "slots").stdout
    assert cli("queue", "slots", "0").exit_code == 2
    try:
        result = cli("queue", "slots", "1")
        assert result.exit_code == 0 and "1 slots" in result.stdout, result.output
        one = queue.submit("-L", "one", *queue.job("one", 1.5))
        two = queue.submit("-L", "two", *queue.job("two", 0.1))
        queue.wait_status(two, Status.FINISHED)
        assert queue.facts("two", "start")["time"] >= queue.facts("one", "end")["time"]
        assert queue.entry(one).status == Status.FINISHED
    finally:
        assert cli("queue", "slots", "unlimited").exit_code == 0


def test_unknown_ids_are_one_line_errors(queue):
    for verb in ("info", "kill", "remove", "output"):
        result = cli("queue", verb, "999999")
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == "error: no job 999999 in the queue (`evalq queue` lists them)"


def test_queue_worker_restarts_its_runner_when_it_dies(prefect_server, tmp_path):
    """`evalq queue worker`: the queue's runner, started again when killed (a new name), stopped with
    the worker by SIGTERM."""
    import signal

    from test_supervisor import kill_all

    def runners() -> dict[str, int]:
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
            except OSError:
                continue
            names = [arg for arg in argv if arg.startswith(f"evalq-queue-{socket.gethostname()}-{worker.pid}")]
            if "runner" in argv and names:
                found[names[0]] = int(pid)
        return found

    worker = subprocess.Popen([sys.executable, "-m", "flows.cli", "queue", "worker", "--slots", "1", "--home", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        first = kit.wait_for(runners, 60, "the queue's runner")
        kill_all(list(first.values()))
        second = kit.wait_for(lambda: set(runners()) - set(first) and runners(), 60, "a new runner")
        assert list(second) == [f"evalq-queue-{socket.gethostname()}-{worker.pid}-1"]
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    assert "warning: the queue's runner stopped (killed by SIGKILL); restarting it in 1 s" in stderr
    assert stderr.rstrip().splitlines()[-1] == "evalq queue worker stopped" and "Traceback" not in stderr
    assert not runners()


def test_an_idle_worker_stops_its_runner_and_gives_up_its_record_before_a_submit_may_decide(prefect_server, tmp_path):
    """The idle queue worker's last look, its runner's stop and its record's removal happen under
    the lock a submit decides under: a submit never finds the record gone while the runner still
    reads ONLINE (it then started no worker, and its job waited for the next submit)."""
    import fcntl

    from flows.runtime.work_pools import apply_work_pool
    from workpools.local import WORK_POOL_TYPE, base_job_template
    from workpools.local.keeper import give_up_record_if_idle
    from workpools.local.service import LOCK_FILE, WorkerRecord, live_worker, write_worker

    pool = "idle-race-test"

    async def make_pool():
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            await apply_work_pool(client, pool, WORK_POOL_TYPE, base_job_template())

    asyncio.run(make_pool())
    write_worker(tmp_path, WorkerRecord(pid=os.getpid(), api_url=prefect_server.api_url, pool=pool, idle_timeout=3,
                                        log=str(tmp_path / "worker.log")))
    seen = {}

    def stop_runner():
        with open(tmp_path / LOCK_FILE, "a") as other:  # as a submit would try it meanwhile
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen["lock"] = "free"
            except BlockingIOError:
                seen["lock"] = "held"
        seen["record"] = live_worker(tmp_path) is not None

    assert give_up_record_if_idle(prefect_server.api_url, pool, tmp_path, stop_runner)
    assert seen == {"lock": "held", "record": True}  # the runner stopped first, under the lock
    assert live_worker(tmp_path) is None

