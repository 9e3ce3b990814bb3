"""Benchmark: what each API call of an episode's life costs the Prefect server, in CPU-seconds.

    python bench/api_cost_bench.py --runs 100 [--database postgres]

Starts the local stack (embedded server, SQLite unless `--database postgres`), stops its runner,
and replays the calls an episode makes, one kind at a time for `--runs` runs: the campaign's
creation, the runner's claim (Pending), the engine's start (Running "Loading"), the episode's
phases ("WaitingForServer", "Running" on a server), the slot lease and its release with their
two events, a log batch, the end (Completed), and the campaign's read of the runs in flight.
Each kind's window lasts until the server's event handling has settled; the server's idle CPU
over the same time is subtracted. Issue 8's budget: what an episode costs, call by call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_bench import database_cpu_seconds, write_job  # noqa: E402
from cost import group_cpu_seconds, write_result  # noqa: E402

from flows.naming import (  # noqa: E402
    EPISODE_DEPLOYMENT,
    LOADING_STATE,
    RUNNING_STATE,
    WAITING_STATE,
    running_message,
)
from flows.runtime.local_stack import LocalStack  # noqa: E402
from flows.runtime.postgres import LocalPostgres  # noqa: E402
from generate.models import Resources  # noqa: E402

SETTLE_SECONDS = 3.0
"""After each kind of call: the server persists and evaluates their events in the background."""


def server_cpu(stack: LocalStack, postgres: LocalPostgres | None) -> float:
    return group_cpu_seconds(stack.server.process.pid) + database_cpu_seconds(postgres)


async def measure(label: str, runs: int, calls: Callable[[int], Awaitable[object]], cpu: Callable[[], float],
                  idle_rate: float, concurrency: int = 4) -> dict:
    """Server CPU-seconds per call of `calls(i)` for i < runs, idle CPU subtracted."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await calls(i)

    before, started = cpu(), time.monotonic()
    await asyncio.gather(*(one(i) for i in range(runs)))
    await asyncio.sleep(SETTLE_SECONDS)
    seconds = time.monotonic() - started
    spent = cpu() - before - idle_rate * seconds
    print(f"  {label:<44} {1000 * spent / runs:7.1f} ms server CPU per call", flush=True)
    return {"call": label, "server_ms_per_call": round(1000 * spent / runs, 1), "window_s": round(seconds, 1)}


async def replay(stack: LocalStack, postgres: LocalPostgres | None, runs: int, work: Path) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import StateType
    from prefect.events import emit_event
    from prefect.states import Completed, Pending, Running

    from flows.naming import pool_limit, server_limit
    from flows.runtime.lease_engine import Leases
    from flows.slots.leaser import EPISODE_SLOT
    from flows.slots.pools import apply_pools

    resources = Resources.model_validate({"cost_1": [{"host": "127.0.0.1", "port": 19999, "capacity": runs}]})
    server = resources.servers("cost_1")[0]
    jobs = [write_job(work, "cost", "reach", i, ["cost_1"]) for i in range(runs)]
    cpu = lambda: server_cpu(stack, postgres)  # noqa: E731
    async with get_client() as client:
        await apply_pools(client, resources)
        deployment = await client.read_deployment_by_name(EPISODE_DEPLOYMENT)
        leases = Leases(client, EPISODE_SLOT)
        await asyncio.sleep(SETTLE_SECONDS)
        idle_before, idle_started = cpu(), time.monotonic()
        await asyncio.sleep(10.0)
        idle_rate = (cpu() - idle_before) / (time.monotonic() - idle_started)
        print(f"  server idle: {idle_rate:.3f} cores", flush=True)
        ids: list[uuid.UUID] = [uuid.uuid4()] * runs
        lease_ids: list[uuid.UUID] = [uuid.uuid4()] * runs

        async def create(i: int) -> None:
            job = jobs[i]
            run = await client.create_flow_run_from_deployment(
                deployment.id, name=f"{job.id}#1", tags=["evalq", "campaign:cost", "pool:cost_1"],
                parameters={"job": job.model_dump(mode="json"), "resources": {"cost_1": [server.model_dump(mode="json")]},
                            "results_dir": str(work / "results"), "evaluator": "simulated", "evaluator_options": {},
                            "campaign": "cost", "prefer": [server.address]})
            ids[i] = run.id

        def phase(state_of: Callable[[], object]) -> Callable[[int], Awaitable[object]]:
            return lambda i: client.set_flow_run_state(ids[i], state_of())

        async def take(i: int) -> None:
            lease_ids[i] = await leases.take([pool_limit("cost_1"), server_limit(server)], ids[i])
            emit_event(event="evalq.slot.acquired", resource={"prefect.resource.id": f"evalq.server.{server.address}",
                                                              "evalq.server": server.address})

        async def give_back(i: int) -> None:
            await leases.release(lease_ids[i])
            emit_event(event="evalq.slot.released", resource={"prefect.resource.id": f"evalq.server.{server.address}",
                                                              "evalq.server": server.address})

        async def logs(i: int) -> None:
            now = time.time()
            await client.create_logs([{"name": "prefect.flow_runs", "level": 20, "message": f"line {n}", "timestamp": now,
                                       "flow_run_id": str(ids[i])} for n in range(6)])

        async def read_in_flight(i: int) -> None:
            await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[i:i + 10])))

        rows = [
            await measure("create_flow_run_from_deployment (campaign)", runs, create, cpu, idle_rate),
            await measure("set_state Pending (runner's claim)", runs, phase(Pending), cpu, idle_rate),
            await measure(f"set_state Running {LOADING_STATE!r} (engine)", runs,
                          phase(lambda: Running(name=LOADING_STATE)), cpu, idle_rate),
            await measure(f"set_state Running {WAITING_STATE!r}", runs,
                          phase(lambda: Running(name=WAITING_STATE)), cpu, idle_rate),
            await measure("lease (increment-with-lease) + acquired event", runs, take, cpu, idle_rate),
            await measure(f"set_state Running {RUNNING_STATE!r} on a server", runs,
                          phase(lambda: Running(name=RUNNING_STATE, message=running_message(server.address, "cost_1"))),
                          cpu, idle_rate),
            await measure("release (decrement-with-lease) + released event", runs, give_back, cpu, idle_rate),
            await measure("log batch (6 lines)", runs, logs, cpu, idle_rate),
            await measure("set_state Completed", runs, phase(Completed), cpu, idle_rate),
            await measure("read_flow_runs of 10 runs (campaign's poll)", runs, read_in_flight, cpu, idle_rate),
        ]
        states = {run.state.type for run in await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=runs)}
        assert states == {StateType.COMPLETED}, f"the replay did not complete every run: {states}"
    return {"idle_server_cores": round(idle_rate, 3), "calls": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evalq-apicost-"))
    postgres = LocalPostgres().start() if args.database == "postgres" else None
    env = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres.url} if postgres else None
    try:
        with LocalStack(work / "home", worker_limit=1, ui=False, server_env=env) as stack:
            stack.stop_worker()  # the calls are replayed here, nothing may pick the runs up (nor restart it)
            measured = asyncio.run(replay(stack, postgres, args.runs, work))
    finally:
        if postgres is not None:
            postgres.stop()
    per_episode = sum(row["server_ms_per_call"] for row in measured["calls"][:-1])
    write_result("apicost", {"command": "python " + " ".join(sys.argv), "settings": vars(args), **measured,
                             "episode_calls_server_ms": round(per_episode, 1)})


if __name__ == "__main__":
    main()
