"""What starts a runner keeps it alive (`flows/runtime/supervisor.py`): the back-off and the
give-up rule (pure, on a fake clock), then real processes that die."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from flows.runtime import supervisor
from flows.runtime.supervisor import Deaths, Supervisor, exit_description
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
