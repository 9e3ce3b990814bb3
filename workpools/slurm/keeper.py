"""`evalq workpools slurm-runners --keep N`: pilots come back while their pool has work.

Pilots end: `scancel`, the time limit, preemption, a lost node. The command that submitted the
array stays and looks every `KEEP_SECONDS`: while the pool has scheduled runs (read as runs, not
polled: the pool must not read as served by the keeper) and fewer than N of the pilots it
submitted are queued or running, it submits an array of the missing ones (same options, same
log folder). A pilot gone while the pool had work counts as a death: the next submission waits
out the back-off of `flows/runtime/supervisor.py` (1 s doubling to 30 s), and after 5 deaths in
10 minutes the keeper stops with one line naming the last pilot's end and its log. It keeps
until SIGINT or SIGTERM; the pilots run on and exit after their idle timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from flows.runtime.api_retry import is_transient
from flows.runtime.supervisor import MAX_DEATHS, Deaths
from workpools.slurm import commands
from workpools.slurm.pilot import RunnerArray, log_path, submit

KEEP_SECONDS = 10.0


def missing_pilots(active: int, keep: int, has_work: bool) -> int:
    """How many pilots to submit now (pure)."""
    return max(0, keep - active) if has_work else 0


async def pool_has_work(client, pool: str) -> bool:
    """Whether a run waits in `pool` (a read of runs: it does not count as a poll of the pool)."""
    from flows.runtime.liveness import pool_has_runs

    return await pool_has_runs(client, pool, ["SCHEDULED"])


class PilotKeeper:
    """The pilots one `slurm-runners --keep N` submitted, kept at N while the pool has work."""

    def __init__(self, array: RunnerArray, keep: int, env: dict[str, str], report: Callable[[str], None]):
        self.array, self.keep, self.env, self.report = array, keep, env, report
        self.jobs: dict[str, RunnerArray] = {}
        """Array job id -> the array submitted under it."""
        self.active: dict[str, str] = {}
        self.deaths = Deaths()
        self.next_submit = 0.0

    async def submit(self, nodes: int) -> str:
        array = self.array.model_copy(update={"nodes": nodes})
        job_id = await submit(array, self.env)
        self.jobs[job_id] = array
        return job_id

    async def keep_going(self, client, interval: float = KEEP_SECONDS) -> str:
        """Look and resubmit until cancelled, or until pilots die too often: then one line why."""
        while True:
            try:
                if (failure := await self.look(client)) is not None:
                    return failure
            except commands.SlurmError as exc:  # the controller or the API is away: look again next time
                self.report(f"could not look at the pilots: {exc}")
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.report(f"could not read the pool's runs: {exc}")
            await asyncio.sleep(interval)

    async def look(self, client) -> str | None:
        active = await commands.queued_or_running(set(self.jobs))
        has_work = await pool_has_work(client, self.array.pool)
        gone, self.active = sorted(set(self.active) - set(active)), active
        for task in gone if has_work else []:
            delay = self.deaths.died(lived_seconds=0)
            ended = await commands.job(task)
            last = ended.describe() if ended else f"SLURM job {task} is gone"
            if delay is None:
                return f"pilots died {MAX_DEATHS} times in 10 minutes (last: {last}); its log: {self.log_of(task)}"
            self.next_submit = time.monotonic() + delay
            self.report(f"pilot {task} ended while the pool has work ({last})")
        missing = missing_pilots(len(active), self.keep, has_work)
        if missing and time.monotonic() >= self.next_submit:
            job_id = await self.submit(missing)
            self.active.update({f"{job_id}_{i}": "PENDING" for i in range(missing)})
            print(job_id, flush=True)
            self.report(f"{missing} pilot(s) resubmitted to keep {self.keep}: job {job_id}")
        return None

    def log_of(self, task: str) -> str:
        job_id, _, index = task.partition("_")
        array = self.jobs.get(job_id, self.array)
        return str(log_path(array, job_id, int(index or 0)))


def keep_pilots(array: RunnerArray, keep: int, env: dict[str, str]) -> int:
    """Submit the array, print its job id, then keep `keep` pilots until SIGINT or SIGTERM (0), or
    until they die too often (one line why, 1)."""
    import signal
    import sys

    from generate.errors import InputError

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async def main() -> str | None:
        from prefect import get_client

        task = asyncio.current_task()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        keeper = PilotKeeper(array, keep, env, report)
        try:
            job_id = await keeper.submit(array.nodes)
        except commands.SlurmError as exc:
            raise InputError(None, str(exc)) from None
        keeper.active = {f"{job_id}_{i}": "PENDING" for i in range(array.nodes)}
        print(job_id, flush=True)
        report(f"{array.nodes} runner(s) on pool {array.pool!r}, kept at {keep} while it has work (Ctrl-C stops keeping); "
               f"logs: {log_path(array, job_id, 0)} ...")
        try:
            async with get_client() as client:
                return await keeper.keep_going(client)
        except asyncio.CancelledError:
            return None

    failure = asyncio.run(main())
    if failure is not None:
        report(f"error: {failure}")
        return 1
    report("stopped keeping pilots; those queued or running go on until their idle timeout")
    return 0
