"""Benchmark: the highest sustained rate of zero-length episodes a Prefect API carries on this box.

    python bench/throughput_bench.py --setup sqlite   [--busy-slots 8,16,32] [--episodes 300] [--runners 4]
    python bench/throughput_bench.py --setup postgres
    python bench/throughput_bench.py --setup replicas     # two API replicas behind haproxy, Redis, services apart

One setup per invocation: one API process on SQLite, one on PostgreSQL (a throwaway cluster,
`flows/runtime/postgres.py`), or the README's scaled setup (`flows/runtime/scaled_stack.py`: two
replicas started with `evalq server start --no-services --redis`, `evalq server services`,
haproxy). `--runners` warm runners take the episodes; demo policy servers of capacity 4 give
`--busy-slots` slots in all (one pool each). Per step (a number of busy slots) one campaign of
`--episodes` zero-length episodes (no load, no steps: the episode connects, resets, closes) runs
in this process, closed-loop: the campaign keeps every slot busy and one episode per server
loaded ahead, as it does in production.

Per step: the steady rate (episodes per second between the 10th and the 90th percentile of
completions), the CPU-seconds per episode of each part (API processes, services, PostgreSQL,
Redis, haproxy, runners, this process: campaign and policy servers), the cores the API used,
and two latencies of the dispatch path from each run's state history: created -> claimed by a
runner (Pending), and created -> playing on its server (Running). On the single-process setups
the API calls per episode by route (the server's access log). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import api_calls, children_cpu_seconds, group_cpu_seconds, write_result  # noqa: E402

from flows.demo.busy import percentile  # noqa: E402
from flows.runtime.host import free_port  # noqa: E402

CAPACITY = 4
"""Slots per demo policy server (one server per pool)."""
ACCESS_LOG = {"PREFECT_SERVER_LOGGING_LEVEL": "INFO"}
ZERO_LENGTH = {"load_seconds": 0, "steps": 0}


def write_inputs(work: Path, busy_slots: int, episodes: int) -> tuple[Path, Path, dict]:
    """jobs.json (`episodes` jobs over the pools, round-robin) and resources.json (one server of CAPACITY per pool)."""
    from generate.models import Job

    pools = max(1, busy_slots // CAPACITY)
    resources = {f"tp{p:02d}_1": [{"host": "127.0.0.1", "port": free_port(), "capacity": CAPACITY}] for p in range(pools)}
    instance = work / "instance.json"
    instance.write_text('{"seed": 0}')
    jobs = []
    for i in range(episodes):
        team = f"tp{i % pools:02d}"
        payload = dict(team=team, team_slug=team, track="standard", task="zero", instance_id=i,
                       instance_basename=f"zero_{i}.json", instance_path=str(instance))
        jobs.append(Job(id=Job.make_id(team, "zero", i), payload=payload, resource_type=f"{team}_1",
                        resource_types=[f"{team}_1"]).model_dump(mode="json"))
    jobs_file, resources_file = work / "jobs.json", work / "resources.json"
    jobs_file.write_text(json.dumps(jobs))
    resources_file.write_text(json.dumps(resources))
    return jobs_file, resources_file, resources


class Single:
    """One API process (the embedded server's command) on SQLite or a throwaway PostgreSQL."""

    def __init__(self, work: Path, database: str):
        self.work, self.database = work, database
        self.postgres = self.server = None

    def __enter__(self) -> "Single":
        from flows.runtime.embedded_server import EmbeddedServer
        from flows.runtime.postgres import LocalPostgres

        env = dict(ACCESS_LOG)
        if self.database == "postgres":
            self.postgres = LocalPostgres().start()
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.postgres.url
        self.server = EmbeddedServer(self.work / "prefect", ui=False, extra_env=env).start()
        return self

    @property
    def api_url(self) -> str:
        return self.server.api_url

    def prepare(self) -> None:
        from flows.runtime.api import use_api
        from flows.runtime.provisioning import prepare_api

        with use_api(self.api_url):
            asyncio.run(prepare_api(kind="runner"))

    def cpu(self) -> dict[str, float]:
        return {"api": group_cpu_seconds(self.server.process.pid), "postgres": postgres_cpu(self.postgres)}

    def log_size(self) -> int:
        return self.server.log_path.stat().st_size

    def calls_since(self, offset: int):
        with open(self.server.log_path, encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return api_calls(log.read())

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.stop(timeout=10)
        if self.postgres is not None:
            self.postgres.stop()


class Replicas:
    """The README's scaled setup: two API replicas behind haproxy, the services apart, PostgreSQL, Redis."""

    def __init__(self, work: Path):
        from flows.runtime.scaled_stack import ScaledStack

        self.stack = ScaledStack(work / "stack", replicas=2)

    def __enter__(self) -> "Replicas":
        self.stack.start()
        self.groups = [self.stack.replica_server_pid(i) for i in range(len(self.stack.ports))]
        return self

    @property
    def api_url(self) -> str:
        return self.stack.api_url

    def prepare(self) -> None:
        """`evalq server start` applied the pools, deployments and automation."""

    def cpu(self) -> dict[str, float]:
        stack = self.stack
        return {"api": sum(group_cpu_seconds(pid) for pid in self.groups), "services": group_cpu_seconds(stack.services.pid),
                "postgres": postgres_cpu(stack.postgres), "redis": group_cpu_seconds(stack.redis.process.pid),
                "haproxy": group_cpu_seconds(stack.balancer.process.pid)}

    def log_size(self) -> int:
        return 0

    def calls_since(self, offset: int):
        return None  # replicas log at WARNING (`evalq server start`): no access lines

    def __exit__(self, *exc) -> None:
        self.stack.stop()


def postgres_cpu(postgres) -> float:
    """CPU-seconds of a PostgreSQL cluster: its postmaster and backends (0 without one)."""
    if postgres is None:
        return 0.0
    return children_cpu_seconds(int((postgres.data / "postmaster.pid").read_text().split()[0]))


async def run_histories(campaign_name: str) -> list[dict]:
    """created, claimed (Pending), playing (Running on its server) and ended, per episode run."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from flows.naming import RUNNING_STATE, campaign_tag

    async with get_client() as client:
        runs, offset = [], 0
        while batch := await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(campaign_name)])),
                limit=200, offset=offset):
            runs += batch
            offset += len(batch)
        gate = asyncio.Semaphore(8)

        async def history(run) -> dict:
            async with gate:
                states = await client.read_flow_run_states(run.id)
            first = lambda kind: min((s.timestamp.timestamp() for s in states if kind(s)), default=None)  # noqa: E731
            return {"state": run.state.type.value, "created": run.created.timestamp(),
                    "claimed": first(lambda s: s.type.value == "PENDING"),
                    "playing": first(lambda s: s.name == RUNNING_STATE),
                    "ended": first(lambda s: s.type.value == "COMPLETED")}

        return list(await asyncio.gather(*(history(run) for run in runs)))


def steady_rate(ends: list[float]) -> float:
    """Episodes per second between the 10th and the 90th percentile of completions."""
    ends = sorted(ends)
    low, high = ends[len(ends) // 10], ends[(9 * len(ends)) // 10]
    return round((len(ends) * 0.8) / (high - low), 2) if high > low else float("nan")


def step(setup, runner_pids: list[int], busy_slots: int, episodes: int, work: Path) -> dict:
    """One campaign of `episodes` zero-length episodes on `busy_slots` slots; what it cost."""
    from flows.campaign.flow import campaign
    from flows.demo.policy_server import fleet_from_resources
    from flows.runtime.api import use_api

    folder = work / f"slots-{busy_slots}"
    folder.mkdir()
    jobs_file, resources_file, resources = write_inputs(folder, busy_slots, episodes)
    name = f"tp-{busy_slots}-{int(time.time())}"
    fleet = fleet_from_resources(resources, folder / "busy.jsonl").start()
    try:
        with use_api(setup.api_url):
            offset = setup.log_size()
            before = {**setup.cpu(), "runners": sum(group_cpu_seconds(pid) for pid in runner_pids), "this process": time.process_time()}
            started = time.monotonic()
            state = asyncio.run(campaign(jobs_file=str(jobs_file), resources_file=str(resources_file),
                                         results_dir=str(folder / "results"), name=name, evaluator_options=ZERO_LENGTH,
                                         stats_interval=600.0, return_state=True))
            seconds = time.monotonic() - started
            after = {**setup.cpu(), "runners": sum(group_cpu_seconds(pid) for pid in runner_pids), "this process": time.process_time()}
            calls = setup.calls_since(offset)
            runs = asyncio.run(run_histories(name))
    finally:
        fleet.stop()
    done = [run for run in runs if run["state"] == "COMPLETED"]
    cpu = {part: round((after[part] - before[part]) / max(1, len(done)), 3) for part in after}
    claim = [run["claimed"] - run["created"] for run in done if run["claimed"]]
    play = [run["playing"] - run["created"] for run in done if run["playing"]]
    return {
        "busy_slots": busy_slots,
        "episodes": len(runs),
        "completed": len(done),
        "campaign_completed": state.is_completed(),
        "campaign_seconds": round(seconds, 1),
        "steady_episodes_per_s": steady_rate([run["ended"] for run in done]),
        "api_cores": round((after["api"] - before["api"]) / seconds, 2),
        "cpu_seconds_per_episode": cpu,
        "created_to_claimed_p50_p95_s": [round(percentile(claim, 0.5), 2), round(percentile(claim, 0.95), 2)],
        "created_to_playing_p50_p95_s": [round(percentile(play, 0.5), 2), round(percentile(play, 0.95), 2)],
        "api_calls_per_episode": round(sum(calls.values()) / max(1, len(done)), 1) if calls is not None else None,
        "api_calls_by_route": {route: round(n / max(1, len(done)), 2) for route, n in calls.most_common(14)} if calls else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", choices=["sqlite", "postgres", "replicas"], required=True)
    parser.add_argument("--busy-slots", default="8,16,32", help="steps: policy-server slots in all (multiples of 4)")
    parser.add_argument("--episodes", type=int, default=300, help="episodes per step")
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--runner-slots", type=int, default=24, help="flow runs at once per runner")
    args = parser.parse_args()
    steps = [int(value) for value in args.busy_slots.split(",")]
    load_before = os.getloadavg()[0]  # the box is shared: what else ran shows here

    from flows.runtime.local_stack import start_worker
    from flows.runtime.process_groups import terminate_group

    work = Path(tempfile.mkdtemp(prefix="evalq-throughput-"))
    setup = Replicas(work) if args.setup == "replicas" else Single(work, args.setup)
    results = []
    with ExitStack() as stack:
        stack.enter_context(setup)
        setup.prepare()
        runners = [start_worker(setup.api_url, args.runner_slots, work / f"runner-{i}.log", name=f"throughput-{i}")
                   for i in range(args.runners)]
        for runner in runners:
            stack.callback(terminate_group, runner, 10)
        deadline = time.monotonic() + 180
        while not all("started" in (work / f"runner-{i}.log").read_text(errors="replace") for i in range(args.runners)):
            if time.monotonic() > deadline:
                raise SystemExit(f"the runners did not start; see {work}")
            time.sleep(0.5)
        for busy_slots in steps:
            results.append(step(setup, [runner.pid for runner in runners], busy_slots, args.episodes, work))
            print(json.dumps(results[-1]), flush=True)
    best = max(results, key=lambda r: r["steady_episodes_per_s"] if r["completed"] == r["episodes"] else 0)
    write_result(f"throughput-{args.setup}", {
        "command": "python " + " ".join(sys.argv),
        "settings": vars(args),
        "load_average_1_min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "highest_sustained_episodes_per_s": best["steady_episodes_per_s"],
        "at_busy_slots": best["busy_slots"],
        "api_cpu_seconds_per_episode_median": statistics.median(r["cpu_seconds_per_episode"]["api"] for r in results),
        "steps": results,
    })


if __name__ == "__main__":
    main()
