"""The GPU-aware local pool: nvidia-smi parsing, GPU choice, seeds, the command runner, and
`evalq submit` end to end on a real Prefect server with a fake 2-GPU `nvidia-smi` on PATH."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import prefect.main  # noqa: F401  (Prefect's console log handler keeps the stderr it first sees: the real one, not a CliRunner's)
import pytest
from typer.testing import CliRunner

from flows.cli.root import app
from workpools.local.allocation import choose_gpus, parse_indices
from workpools.local.command import run_argv
from workpools.local.gpus import Gpu, GpuQueryError, free_indices, parse_nvidia_smi, query_gpus
from workpools.local.job import gpu_limit
from workpools.local.seeds import parse_seeds, substitute
from workpools.local.submit import plan_jobs

FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"
RECORD = """
import json, os, signal, sys, time
name, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
start = time.time()
def killed(signum, frame):  # the runner's SIGTERM: record when the command stopped, while it still runs
    with open(os.path.join(out, name + ".killed"), "w") as f:
        json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, f)
    raise SystemExit(128 + signum)
signal.signal(signal.SIGTERM, killed)
with open(os.path.join(out, name + ".start"), "w") as f:
    json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "seed": os.environ.get("SEED"), "start": start}, f)
time.sleep(seconds)
with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, f)
"""


@pytest.fixture
def fake_gpus(monkeypatch):
    """The fake nvidia-smi first on PATH: two idle 80 GB GPUs unless FAKE_NVIDIA_SMI_CSV says otherwise."""
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FAKE_NVIDIA_SMI_CSV", raising=False)


class TestNvidiaSmi:
    def test_parse(self):
        assert parse_nvidia_smi("1, 81920, 40000\n\n0, 81920, 12\n") == [Gpu(0, 81920, 12), Gpu(1, 81920, 40000)]

    def test_garbage_is_an_error(self):
        with pytest.raises(GpuQueryError, match="line 1"):
            parse_nvidia_smi("[N/A], 81920, 0")

    def test_free_threshold_is_inclusive(self):
        gpus = [Gpu(0, 10000, 1000), Gpu(1, 10000, 1001), Gpu(2, 0, 0)]
        assert free_indices(gpus, 0.9) == [0]
        assert free_indices(gpus, 0.0) == [0, 1, 2]

    def test_query_uses_nvidia_smi_on_path(self, fake_gpus, monkeypatch):
        assert [gpu.index for gpu in query_gpus()] == [0, 1]
        monkeypatch.setenv("FAKE_NVIDIA_SMI_CSV", "0, 24576, 20000\n1, 24576, 100\n2, 24576, 0")
        assert free_indices(query_gpus(), 0.9) == [1, 2]

    def test_missing_nvidia_smi(self):
        with pytest.raises(GpuQueryError, match="not found on PATH"):
            query_gpus("no-such-nvidia-smi")


class TestGpuChoice:
    def test_first_free_unleased(self):
        assert choose_gpus(2, [0, 1, 2, 3], leased={1}) == [0, 2]

    def test_waits_when_too_few(self):
        assert choose_gpus(2, [0, 1], leased={0}) is None

    def test_pinned_gets_exactly_its_gpus_or_waits(self):
        assert choose_gpus(2, [0, 1, 2], set(), pinned=[2, 0]) == [2, 0]
        assert choose_gpus(1, [0, 1, 2], {2}, pinned=[2]) is None
        assert choose_gpus(1, [0, 1], set(), pinned=[3]) is None

    def test_no_gpus(self):
        assert choose_gpus(0, [], set()) == []

    @pytest.mark.parametrize("text", ["0,0", "a", "-1", "", "1,,2"])
    def test_bad_indices(self, text):
        with pytest.raises(ValueError):
            parse_indices(text)


class TestSeeds:
    @pytest.mark.parametrize(
        "text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("1,3,7", [1, 3, 7]), ("0-2,10,1", [0, 1, 2, 10]), ("5", [5])]
    )
    def test_parse(self, text, seeds):
        assert parse_seeds(text) == seeds

    @pytest.mark.parametrize("text", ["4-0", "a-b", "1-", "", "1;2"])
    def test_bad(self, text):
        with pytest.raises(ValueError):
            parse_seeds(text)

    def test_substitute_only_the_placeholder(self):
        assert substitute(["train", "--seed={seed}", "{x}", "out/{seed}/"], 3) == ["train", "--seed=3", "{x}", "out/3/"]


class TestPlan:
    def test_seeds_expand_into_jobs(self):
        jobs = plan_jobs(["train", "--seed", "{seed}"], gpus=1, seeds="0-2", label="sweep", cwd="/w")
        assert [job.argv for job in jobs] == [["train", "--seed", str(seed)] for seed in range(3)]
        assert [job.env for job in jobs] == [{"SEED": str(seed)} for seed in range(3)]
        assert [job.run_name() for job in jobs] == ["sweep[seed=0]", "sweep[seed=1]", "sweep[seed=2]"]
        assert "label:sweep" in jobs[0].tags() and "seed:0" in jobs[0].tags()

    def test_pinned_gpus_set_the_count(self):
        (job,) = plan_jobs(["x"], gpu_indices="0,2")
        assert (job.gpus, job.gpu_indices) == (2, [0, 2])

    @pytest.mark.parametrize(
        "kwargs, problem",
        [({"gpus": 1, "gpu_indices": "0,1"}, "disagrees"), ({"seeds": "x"}, "seeds"), ({"gpu_indices": "0,0"}, "repeat")],
    )
    def test_bad_input(self, kwargs, problem):
        from generate.errors import InputError

        with pytest.raises(InputError, match=problem):
            plan_jobs(["x"], **kwargs)


class TestRunArgv:
    def test_exit_code_and_env(self, tmp_path):
        out = tmp_path / "env"
        argv = [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(os.environ['X']); raise SystemExit(3)"]
        outcome = asyncio.run(run_argv(argv, {**os.environ, "X": "a b;c"}))
        assert (outcome.returncode, outcome.timed_out, out.read_text()) == (3, False, "a b;c")

    def test_timeout_kills_the_process_group(self, tmp_path):
        pid_file = tmp_path / "child.pid"
        child = "import time; time.sleep(60)"
        parent = (
            "import subprocess, sys, time; "
            f"p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
        )
        started = time.monotonic()
        outcome = asyncio.run(run_argv([sys.executable, "-c", parent], dict(os.environ), timeout=2))
        assert outcome.timed_out and time.monotonic() - started < 15
        child_pid = int(pid_file.read_text())
        time.sleep(0.2)
        assert not pid_alive(child_pid), "the command's child survived the timeout"

    def test_children_left_behind_do_not_outlive_the_command(self, tmp_path):
        """A command that exits normally but leaves a child running (say, on its GPU)."""
        pid_file = tmp_path / "child.pid"
        parent = (
            "import subprocess, sys; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))"
        )
        outcome = asyncio.run(run_argv([sys.executable, "-c", parent], dict(os.environ), timeout=30))
        assert (outcome.returncode, outcome.timed_out) == (0, False)
        time.sleep(0.2)
        assert not pid_alive(int(pid_file.read_text())), "a leftover child outlived the command"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


class FakeLeaseClient:
    def __init__(self):
        self.calls = []

    async def renew_concurrency_lease(self, lease_id, lease_duration):
        self.calls.append(("renew", lease_id, lease_duration))

    async def release_concurrency_slots_with_lease(self, lease_id):
        self.calls.append(("release", lease_id))


class TestLeaseHolding:
    def test_renewed_while_held_and_released_on_error(self):
        from dataclasses import replace

        from flows.runtime.lease_engine import Leases
        from workpools.local.leases import GPU_LEASE

        client = FakeLeaseClient()

        async def hold():
            async with Leases(client, replace(GPU_LEASE, renew_seconds=0.05)).holding("lease-1", "GPU 0"):
                await asyncio.sleep(0.2)
                raise RuntimeError("the command blew up")

        with pytest.raises(RuntimeError):
            asyncio.run(hold())
        assert ("renew", "lease-1", GPU_LEASE.lease_seconds) in client.calls
        assert client.calls[-1] == ("release", "lease-1")
        assert client.calls.count(("release", "lease-1")) == 1


class TestCli:
    def test_dry_run_prints_the_plan_and_creates_nothing(self, fake_gpus, monkeypatch):
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: must not be called
        result = CliRunner().invoke(
            app, ["submit", "--dry-run", "-G", "1", "--seeds", "0-4", "-L", "sweep", "--timeout", "60", "-D", "prep",
                  "--", "python", "train.py", "--seed", "{seed}"],
        )
        assert result.exit_code == 0, result.output
        for seed in range(5):
            assert f"sweep[seed={seed}]" in result.output
            assert f"python train.py --seed {seed}" in result.output
        assert "60s" in result.output and "prep" in result.output

    @pytest.mark.parametrize(
        "args, problem",
        [
            (["-G", "3", "--", "x"], "asks for 3 GPUs; this machine has 2"),
            (["--gpu-indices", "5", "--", "x"], "no GPU [5]"),
            (["--seeds", "3-1", "--", "x"], "runs backwards"),
        ],
    )
    def test_bad_input_is_one_line_and_exit_2(self, fake_gpus, args, problem):
        result = CliRunner().invoke(app, ["submit", "--dry-run", *args])
        assert result.exit_code == 2
        assert result.stderr.strip() == f"error: {result.stderr.strip()[7:]}" and problem in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    def test_a_named_server_that_does_not_answer_is_a_clear_error(self, fake_gpus):
        """A server named with --api is used as it is, never replaced by one evalq starts
        (without one, `evalq submit` starts the user's server: tests/test_no_setup.py)."""
        result = CliRunner().invoke(app, ["submit", "--api", "http://127.0.0.1:9/api", "--", "true"])
        assert result.exit_code == 2
        assert result.stderr.strip().startswith("error: Prefect API at http://127.0.0.1:9/api unreachable")
        assert result.stderr.strip().endswith("(from --api)") and len(result.stderr.strip().splitlines()) == 1


# --- end to end on the session's Prefect server ------------------------------------------------

POOL = "gpu-test"


@pytest.fixture
def local_pool(prefect_server, fake_gpus, monkeypatch):
    """The README recipe's first step: `evalq workpools apply --kind local` (here under a test name).
    The tests run the queued runs in this process: no queue worker may start to take them."""
    monkeypatch.setenv("EVALQ_QUEUE_RUNNER", "0")
    result = CliRunner().invoke(app, ["workpools", "apply", "--kind", "local", "--name", POOL])
    assert result.exit_code == 0, result.output
    assert f"work pool {POOL} (evalq-runner)" in result.output
    return prefect_server


def submit(*args: str) -> list[str]:
    """`evalq submit --verbose ...` (`<queue id> <flow-run id> <name>` per job); the created flow-run ids."""
    result = CliRunner().invoke(app, ["submit", "--verbose", *args])
    assert result.exit_code == 0, result.output
    return [line.split("\t")[1] for line in result.stdout.splitlines()]


def record(out: Path, name: str, seconds: float) -> list[str]:
    return ["--", sys.executable, "-c", RECORD, name, str(seconds), str(out)]


async def execute(run_ids: list[str]) -> dict[str, object]:
    """Run the queued flow runs in this process, all at once; their final states by id."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from workpools.local.flow import run_command

    async with get_client() as client:
        runs = [await client.read_flow_run(run_id) for run_id in run_ids]
    states = await asyncio.gather(
        *(run_flow(run_command, flow_run=run, parameters=run.parameters, return_type="state") for run in runs)
    )
    return dict(zip(run_ids, states))


async def active_gpu_slots(host: str) -> list[int]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [(await client.read_global_concurrency_limit_by_name(gpu_limit(host, i))).active_slots for i in (0, 1)]


def test_submit_and_run_on_two_gpus(local_pool, tmp_path):
    """Two 1-GPU jobs share the machine, a 2-GPU job waits for both GPUs and for its dependency,
    a timed-out job is killed, its strict dependent (`--after-success`) fails while its `-D`
    dependent runs once it ended (task-spooler's meaning), and every lease comes back."""
    import socket

    a = submit("-G", "1", "-L", "a", *record(tmp_path, "a", 2))
    b = submit("-G", "1", "-L", "b", *record(tmp_path, "b", 2))
    c = submit("-G", "2", "-L", "c", "-D", "a", *record(tmp_path, "c", 0.5))
    t = submit("-G", "1", "-L", "t", "--timeout", "1", *record(tmp_path, "t", 60))
    d = submit("-G", "1", "--after-success", t[0], *record(tmp_path, "d", 0.1))
    e = submit("-D", t[0], *record(tmp_path, "e", 0.1))
    s = submit("--seeds", "1-2", "-L", "seeded", *record(tmp_path, "s{seed}", 0.1))
    bad = submit("-G", "1", "--", sys.executable, "-c", "raise SystemExit(4)")
    missing = submit("-G", "1", "--", str(tmp_path / "no-such-program"))
    states = asyncio.run(execute(a + b + c + t + d + e + s + bad + missing))

    for run_id in a + b + c + e + s:
        assert states[run_id].is_completed(), states[run_id]
    done = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b", "c", "s1", "s2")}
    assert {done["a"]["cuda"], done["b"]["cuda"]} <= {"0", "1"}  # one GPU each (at once or in turn)
    assert done["c"]["cuda"] == "0,1"
    # c depends on a only: it starts after a ended. b has no order with c (c may take both GPUs
    # before b gets one); that c never shared a GPU with b (or t) is the overlap check below.
    assert done["c"]["start"] >= done["a"]["end"]
    assert (done["s1"]["cuda"], json.loads((tmp_path / "s1.start").read_text())["seed"]) == ("", "1")

    # Every interval is measured by the command itself, so lies inside its GPU lease: from after the
    # lease was taken to before it was released (t's end is when the timeout's SIGTERM reached it).
    killed_t = json.loads((tmp_path / "t.killed").read_text())
    intervals = [
        (gpu, job["start"], job["end"]) for job in [*done.values(), killed_t] for gpu in job["cuda"].split(",") if gpu
    ]
    for i, (gpu, start, end) in enumerate(intervals):
        for other_gpu, other_start, other_end in intervals[i + 1:]:
            assert gpu != other_gpu or end <= other_start or other_end <= start, "two jobs held one GPU at once"

    assert states[t[0]].is_failed() and "timed out after 1 s" in states[t[0]].message
    assert not (tmp_path / "t.json").exists()
    assert states[d[0]].is_failed() and not (tmp_path / "d.start").exists()
    assert json.loads((tmp_path / "e.start").read_text())["start"] >= killed_t["end"]
    assert states[bad[0]].is_failed() and "exited with code 4" in states[bad[0]].message
    assert states[missing[0]].is_failed()
    assert asyncio.run(active_gpu_slots(socket.gethostname())) == [0, 0]


def test_pinned_job_gets_its_gpu(local_pool, tmp_path):
    (run_id,) = submit("--gpu-indices", "1", *record(tmp_path, "pinned", 0.1))
    (state,) = asyncio.run(execute([run_id])).values()
    assert state.is_completed(), state
    assert json.loads((tmp_path / "pinned.json").read_text())["cuda"] == "1"


def test_busy_gpu_by_memory_is_skipped(local_pool, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NVIDIA_SMI_CSV", "0, 81920, 40000\n1, 81920, 1000")
    (run_id,) = submit("-G", "1", *record(tmp_path, "picky", 0.1))
    asyncio.run(execute([run_id]))
    assert json.loads((tmp_path / "picky.json").read_text())["cuda"] == "1"


def test_dry_run_creates_nothing_on_the_server(local_pool):
    from prefect.client.orchestration import get_client

    async def count() -> int:
        async with get_client() as client:
            return await client.count_flow_runs()

    before = asyncio.run(count())
    result = CliRunner().invoke(app, ["submit", "--dry-run", "-G", "1", "--", "true"])
    assert result.exit_code == 0 and "would queue" in result.output
    assert asyncio.run(count()) == before


def test_unknown_dependency_is_an_input_error(local_pool):
    result = CliRunner().invoke(app, ["submit", "-D", "no-such-label", "--", "true"])
    assert result.exit_code == 2 and "no flow run with that id or label" in result.stderr


def test_process_worker_runs_a_submitted_job(local_pool, tmp_path):
    """The README recipe: `evalq submit ...` then `prefect worker start --pool ...` runs it."""
    import subprocess

    from prefect.client.orchestration import get_client

    (run_id,) = submit("-G", "1", "-L", "via-worker", *record(tmp_path, "worker", 0.1))
    env = {**os.environ, "PREFECT_API_URL": local_pool.api_url, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--run-once"],
        env=env, capture_output=True, text=True, timeout=240,
    )

    async def state():
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state

    final = asyncio.run(state())
    assert final.is_completed(), (final, worker.stdout[-3000:], worker.stderr[-3000:])
    assert json.loads((tmp_path / "worker.json").read_text())["cuda"] in ("0", "1")
