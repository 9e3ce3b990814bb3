"""Benchmark: a campaign of short episodes on demo policy servers, measured by the servers.

    python bench/campaign_bench.py --teams 6 --episodes-per-team 10 --episode-seconds 5 [--worker runner|prefork]

Starts an embedded Prefect server with the local worker (the warm runner, or the prefork
worker for comparison), one capacity-1 policy server per team, runs the campaign, and
prints + writes (bench/results/) utilization, handoff gaps, makespan vs lower bound,
per-episode slot overhead, and what an episode costs: API calls by route and CPU-seconds
of the server, the worker and this process (the campaign). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bounds import lower_bound  # noqa: E402
from cost import api_calls, children_cpu_seconds, group_cpu_seconds, write_result  # noqa: E402

from flows.cli.launch import run_campaign  # noqa: E402
from flows.demo.busy import summarize  # noqa: E402
from flows.demo.policy_server import fleet_from_resources  # noqa: E402
from flows.runtime.host import free_port  # noqa: E402
from flows.runtime.local_stack import LocalStack  # noqa: E402
from flows.runtime.postgres import LocalPostgres  # noqa: E402
from flows.slots.leaser import SAFETY_POLL_SECONDS  # noqa: E402
from generate.models import Job, Resources  # noqa: E402


def write_job(work: Path, team: str, task: str, i: int, pools: list[str]) -> Job:
    instance = work / "instances" / task / f"{task}_{i}_template-tro_state.json"
    instance.parent.mkdir(parents=True, exist_ok=True)
    instance.write_text(json.dumps({"seed": i}))
    payload = dict(team=team, team_slug=team, track="standard", task=task, instance_id=i,
                   instance_basename=instance.name, instance_path=str(instance))
    return Job(id=Job.make_id(team, task, i), payload=payload, resource_type=pools[0], resource_types=pools)


def simple(work: Path, teams: int, per_team: int) -> tuple[list[Job], dict]:
    """One capacity-1 server per team; every job fits its team's server only."""
    jobs, resources = [], {}
    for t in range(teams):
        team, pool = f"team{t}", f"team{t}_1"
        resources[pool] = [{"host": "127.0.0.1", "port": free_port(), "capacity": 1}]
        jobs += [write_job(work, team, "reach", i, [pool]) for i in range(per_team)]
    return jobs, resources


def mixed(work: Path, teams: int, per_team: int) -> tuple[list[Job], dict]:
    """Restricted servers beside general ones: `lab` has a general server and one that only
    reaches; `lab` pushes (general only) and reaches (either); `solo` reaches on its own
    server; `wide` reaches on any of the three pools' servers. `teams` is ignored."""
    server = lambda **extra: {"host": "127.0.0.1", "port": free_port(), "capacity": 1, **extra}  # noqa: E731
    resources = {"lab_1": [server(), server(compatible_task="reach")], "solo_1": [server()], "wide_1": [server()]}
    jobs = [write_job(work, "lab", "push", i, ["lab_1"]) for i in range(per_team)]
    jobs += [write_job(work, "lab", "reach", i, ["lab_1"]) for i in range(per_team)]
    jobs += [write_job(work, "solo", "reach", i, ["solo_1"]) for i in range(per_team)]
    jobs += [write_job(work, "wide", "reach", i, ["wide_1", "solo_1", "lab_1"]) for i in range(per_team)]
    return jobs, resources


SCENARIOS = {"simple": simple, "mixed": mixed}


def build(work: Path, scenario: str, teams: int, per_team: int) -> tuple[Path, Path, list[Job]]:
    jobs, resources = SCENARIOS[scenario](work, teams, per_team)
    jobs_file, resources_file = work / "jobs.json", work / "resources.json"
    jobs_file.write_text(json.dumps([j.model_dump(mode="json") for j in jobs]))
    resources_file.write_text(json.dumps(resources))
    return jobs_file, resources_file, jobs


def constrained_bound(jobs: list[Job], resources_file: Path, episode_seconds: float) -> float:
    """The span lower bound given which servers can run which job (bench/bounds.py)."""
    from flows.slots.steering import ExclusiveDemand
    from generate.jsonio import read_model
    from generate.models import Resources

    demand = ExclusiveDemand(read_model(resources_file, Resources))
    work: dict[frozenset[str], float] = {}
    for job in jobs:
        servers = frozenset(demand.servers(job))
        work[servers] = work.get(servers, 0.0) + episode_seconds
    return lower_bound(work, demand.capacity)


def wait_until_started(worker_log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker_log.exists() and " started" in worker_log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise SystemExit(f"the worker did not start; see {worker_log}")


def database_cpu_seconds(postgres: LocalPostgres | None) -> float:
    """CPU-seconds of the PostgreSQL cluster's processes (postmaster and backends); 0 on SQLite."""
    if postgres is None:
        return 0.0
    postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
    return children_cpu_seconds(postmaster)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teams", type=int, default=6)
    parser.add_argument("--episodes-per-team", type=int, default=10)
    parser.add_argument("--episode-seconds", type=float, default=5.0)
    parser.add_argument("--load-seconds", type=float, default=2.0, help="simulator loading (prepare)")
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--max-prefetch", type=int, default=3)
    parser.add_argument("--poll-seconds", type=float, default=SAFETY_POLL_SECONDS, help="waiting episodes' safety poll")
    parser.add_argument("--worker", choices=["runner", "prefork"], default="runner")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="simple")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                        help="the Prefect server's database (postgres: a throwaway local cluster)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="evalq-bench-"))
    jobs_file, resources_file, jobs = build(work, args.scenario, args.teams, args.episodes_per_team)
    resources = json.loads(resources_file.read_text())
    capacities = {f"{s['host']}:{s['port']}": s["capacity"] for servers in resources.values() for s in servers}
    busy_log = work / "busy.jsonl"
    steps = 25
    options = {"load_seconds": args.load_seconds, "steps": steps, "step_seconds": args.episode_seconds / steps}
    limit = Resources.model_validate(resources).most_in_flight(max(args.prefetch, args.max_prefetch))
    fleet = fleet_from_resources(resources, busy_log).start()
    access_log = {"PREFECT_SERVER_LOGGING_LEVEL": "INFO"}  # one line per request: the API calls
    postgres = LocalPostgres().start() if args.database == "postgres" else None
    if postgres is not None:
        access_log["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres.url
    try:
        with LocalStack(work / "home", worker_limit=limit, ui=False, worker_kind=args.worker, server_env=access_log) as stack:
            wait_until_started(stack.home / "worker.log")  # its start-up is not an episode's cost
            log_start = stack.server.log_path.stat().st_size
            cpu_before = {"database": database_cpu_seconds(postgres),
                          "server": group_cpu_seconds(stack.server.process.pid),
                          "worker": group_cpu_seconds(stack.worker.pid), "campaign": time.process_time()}
            started = time.time()
            summary = run_campaign(
                dict(jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(work / "results"),
                     name="bench", evaluator_options=options, prefetch=args.prefetch, max_prefetch=args.max_prefetch, stats_interval=30.0,
                     poll_seconds=args.poll_seconds),
                limit, work / "home", stack,
            )
            cpu = {"database": database_cpu_seconds(postgres) - cpu_before["database"],
                   "server": group_cpu_seconds(stack.server.process.pid) - cpu_before["server"],
                   "worker": group_cpu_seconds(stack.worker.pid) - cpu_before["worker"],
                   "campaign": time.process_time() - cpu_before["campaign"]}
            with open(stack.server.log_path, encoding="utf-8", errors="replace") as log:
                log.seek(log_start)
                calls = api_calls(log.read())
    finally:
        fleet.stop()
        if postgres is not None:
            postgres.stop()
    episodes = len(jobs)
    intervals = [json.loads(line) for line in busy_log.read_text().splitlines()]
    held = [json.loads(p.read_text())["evalq"]["held_seconds"] for p in (work / "results").rglob("*.json")
            if p.name != "failed.txt" and p.parent.name == "metrics"]
    measured = summarize(intervals, capacities, started, held)
    bound = constrained_bound(jobs, resources_file, measured["episode_seconds_mean"])
    result = {
        "command": "python " + " ".join(sys.argv),
        "settings": vars(args),
        "failed": len(summary["failed"]),
        "violations": sum(s.violations for s in fleet.stats().values()),
        **measured,
        "constrained_bound_s": round(bound, 1),
        "span_over_bound": round(measured["makespan_from_first_episode_s"] / bound, 2),
        "cpu_seconds_per_episode": {name: round(value / episodes, 3) for name, value in cpu.items()},
        "api_calls_per_episode": round(sum(calls.values()) / episodes, 1),
        "api_calls_by_route": dict(calls.most_common()),
    }
    write_result("campaign", result)


if __name__ == "__main__":
    main()
