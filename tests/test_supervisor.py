"""What starts a runner keeps it alive (`flows/runtime/supervisor.py`): the back-off and the
give-up rule (pure, on a fake clock), then real processes that die."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from flows.runtime import supervisor
from flows.runtime.supervisor import Deaths, Supervisor, exit_description
from flows.slots.leaser import EPISODE_LEASE_SECONDS
from kit import wait_for


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_back_off_doubles_resets_after_a_steady_run_and_five_deaths_in_ten_minutes_give_up():
    clock = Clock()
    deaths = Deaths(now=clock)
    delays = []
    for _ in range(4):
        delays.append(deaths.died(lived_seconds=1))
        clock.now += 100
    assert delays == [1, 2, 4, 8]
    assert deaths.died(lived_seconds=1) is None  # the fifth within 10 minutes

    spread = Deaths(now=clock)
    for _ in range(8):  # one death every 3 minutes never gives up, and a steady run resets the back-off
        assert spread.died(lived_seconds=supervisor.STEADY_SECONDS) == 1
        clock.now += 180


def test_exit_descriptions():
    assert exit_description(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_description(3) == "exit code 3"


def test_a_process_that_dies_is_started_again_and_one_that_always_dies_is_given_up(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "BACKOFF_FIRST_SECONDS", 0.05)
    log = tmp_path / "worker.log"
    starts, reported, forgotten = [], [], []

    def start(n: int) -> subprocess.Popen:
        starts.append(n)
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], start_new_session=True)

    keeper = Supervisor("the test runner", start, log, on_death=forgotten.append, report=reported.append).start()
    try:
        wait_for(lambda: keeper.failure, 60, "the supervisor to give up")
    finally:
        keeper.stop(grace=1)
    assert starts == [0, 1, 2, 3, 4] and forgotten == [0, 1, 2, 3, 4]
    assert keeper.failure == f"the test runner died 5 times in 10 minutes (last: exit code 3); its log: {log}"
    assert len(reported) == 4 and reported[0].startswith("the test runner stopped (exit code 3); restarting it in")


def test_stopping_ends_the_process_and_starts_no_other(tmp_path):
    starts = []

    def start(n: int) -> subprocess.Popen:
        starts.append(n)
        return subprocess.Popen(["sleep", "60"], start_new_session=True)

    keeper = Supervisor("sleeper", start, tmp_path / "log").start()
    first = keeper.process
    first.send_signal(signal.SIGKILL)
    wait_for(lambda: keeper.process is not first, 30, "the restart")
    second = keeper.process
    keeper.stop(grace=2)
    time.sleep(supervisor.WATCH_SECONDS * 3)
    assert starts == [0, 1] and second.poll() is not None and keeper.failure is None


def test_a_second_stop_signals_nothing(tmp_path):
    """Once stopped, the process group id it knew may be someone else's: a later stop leaves it alone."""
    keeper = Supervisor("sleeper", lambda n: subprocess.Popen(["sleep", "60"], start_new_session=True), tmp_path / "log").start()
    keeper.stop(grace=2)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    keeper.process = stranger  # as if its group id had been given to a new process
    try:
        keeper.stop(grace=2)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


# -- the embedded stack of `evalq campaign run` -----------------------------------------------------

SIM_OPTIONS = ["--evaluator-option", "load_seconds=0.2", "--evaluator-option", "steps=12", "--evaluator-option", "step_seconds=0.2"]


def embedded_campaign(tmp_path, jobs, resources, name: str) -> subprocess.Popen:
    """`evalq campaign run` on an embedded server of its own (no PREFECT_API_URL, no user server)."""
    import os

    from kit import write_inputs

    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    argv = [sys.executable, "-m", "flows.cli", "campaign", "run", "--jobs", str(jobs_file), "--resources", str(resources_file),
            "--results-dir", str(tmp_path / "results"), "--home", str(tmp_path / ".evalq"), "--name", name,
            "--stats-interval", "10", *SIM_OPTIONS]
    return subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=open(tmp_path / "stdout.txt", "w"),
                            stderr=open(tmp_path / "stderr.txt", "w"))


def local_runners(campaign_pid: int) -> list[int]:
    """The pids of the runners the local stack of `campaign_pid` started (their names carry its pid)."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"runner" in argv and any(arg.startswith(f"evalq-local-{campaign_pid}".encode()) for arg in argv):
            found.append(int(pid))
    return found


def exit_code(command, seconds: float, tmp_path) -> int:
    """The campaign command's exit code; if it does not end in time, a failure that shows its
    output and its runner's log (what it waited for)."""
    import subprocess

    try:
        return command.wait(seconds)
    except subprocess.TimeoutExpired:
        log = tmp_path / ".evalq" / "worker.log"
        raise AssertionError(f"the campaign did not end in {seconds:.0f} s\n--- its stderr:\n"
                             f"{(tmp_path / 'stderr.txt').read_text()[-4000:]}\n--- worker.log:\n"
                             f"{log.read_text()[-4000:] if log.exists() else '(none)'}") from None


def kill_all(pids: list[int]) -> None:
    import os

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_embedded_runner_killed_twice_is_restarted_and_every_episode_completes_once(tmp_path):
    """SIGKILL of the local stack's runner, twice, while it plays: no runner is started by the
    test; the stack restarts its own, the campaign settles the dead one's runs (and gives back
    its slots) and exits 0 with every episode done once."""
    from kit import make_fleet, make_job

    fleet, resources = make_fleet({"a_1": [1], "b_1": [1]})
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for team in "ab" for i in range(5)]
    metrics = lambda: sum(job.metrics_path(tmp_path / "results").exists() for job in jobs)  # noqa: E731
    with fleet:
        command = embedded_campaign(tmp_path, jobs, resources, "killed-twice")
        try:
            killed = []
            for done_before_kill in (2, 5):
                wait_for(lambda: metrics() >= done_before_kill and local_runners(command.pid), 240,
                         f"{done_before_kill} episodes done", detail=lambda: (tmp_path / "stderr.txt").read_text()[-3000:])
                runners = local_runners(command.pid)
                kill_all(runners)
                killed += runners
            # A run killed right after it leased, before its `evalq.slot.acquired` event left the
            # process (seen under CI's load), cannot be given back by the campaign: its server comes
            # back when the lease runs out (EPISODE_LEASE_SECONDS, 320 s). Allow for one.
            assert exit_code(command, 300 + EPISODE_LEASE_SECONDS, tmp_path) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
        finally:
            command.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert len(set(killed)) == 2 and stderr.count("the local runner stopped (killed by SIGKILL); restarting it") == 2
    assert "Traceback" not in stderr and "its runner evalq-local-" in stderr
    documents = [json.loads(job.metrics_path(tmp_path / "results").read_text())["evalq"] for job in jobs]
    assert sorted(d["job_id"] for d in documents) == sorted(job.id for job in jobs)
    assert "written by another run meanwhile" not in (tmp_path / ".evalq" / "worker.log").read_text()  # none played twice to the end
    assert all(s.violations == 0 for s in fleet.stats().values())


def test_a_runner_that_dies_at_once_on_every_start_stops_the_campaign_with_one_line(tmp_path):
    from kit import make_fleet, make_job

    fleet, resources = make_fleet({"a_1": [1]})
    jobs = [make_job(tmp_path, "a", "pick", i, ["a_1"]) for i in range(2)]
    with fleet:
        command = embedded_campaign(tmp_path, jobs, resources, "doomed")
        try:
            deadline = time.monotonic() + 300
            while command.poll() is None and time.monotonic() < deadline:  # each runner dies as it starts
                kill_all(local_runners(command.pid))
                time.sleep(0.05)
        finally:
            command.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    log = tmp_path / ".evalq" / "worker.log"
    assert command.returncode == 1, stderr[-3000:]
    assert stderr.rstrip().splitlines()[-1] == (f"error: campaign 'doomed' stopped: the local runner died 5 times in 10 minutes "
                                                f"(last: killed by SIGKILL); its log: {log}")
    assert stderr.count("died 5 times") == 1 and "Traceback" not in stderr
