"""Benchmark: a 50,000-episode campaign on PostgreSQL, run to a fixed number of completions.

    python bench/scale_bench.py run --early 400 --late 400 [--hold]

One campaign of 50,000 jobs (25 teams x 8 tasks x 250 instances, one capacity-1 demo policy
server per team, ~1 s episodes) on a throwaway PostgreSQL (`flows/runtime/postgres.py`) with the warm
runner. The box cannot run 50,000 episodes (each costs the server ~0.8 CPU-s), so:

1. **early**: the campaign starts with all 50,000 jobs pending on an empty runs table and is
   stopped after `--early` completions (dispatch halted, in-flight episodes drained);
2. **fill**: every other job gets a Completed episode run (its metrics file written too),
   created through Prefect's bulk endpoint (`POST /deployments/{id}/create_flow_run/bulk`,
   100 runs a call), so the runs table holds 50,000 episode runs of the campaign;
3. **late**: the same campaign runs again (it reads its history: 50,000 runs) on the
   remaining jobs and is stopped after `--late` completions.

Each campaign phase runs in a child process (`campaign` subcommand) that records per tick the
loop time, the RSS and the latency of each run creation. Recorded: dispatch rate (campaign
and bulk), campaign RSS and bytes per planned job, loop time per tick, server (+PostgreSQL)
CPU per episode, and early vs late: creation latency, episode overhead (dispatch -> running,
running -> end minus the play time). `--hold` keeps the stack up at the end and prints its
PREFECT_API_URL (for `bench/tui_bench.py measure --campaign scale`). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import group_cpu_seconds  # noqa: E402

CAMPAIGN = "scale"
TEAMS, TASKS, INSTANCES = 25, 8, 250
STEPS, STEP_SECONDS, LOAD_SECONDS = 4, 0.2, 0.2
BULK = 100
"""Prefect's cap on runs per bulk-create call."""


def build(work: Path, instances: int = INSTANCES) -> tuple[Path, Path, list]:
    """jobs.json (25 x 8 x `instances` jobs: 50,000 by default) and resources.json (a capacity-1 server per team)."""
    from flows.runtime.host import free_port
    from generate.models import Job

    resources, jobs = {}, []
    for k in range(TASKS):
        instance = work / "instances" / f"task{k}.json"
        instance.parent.mkdir(parents=True, exist_ok=True)
        instance.write_text('{"seed": 0}')
    for t in range(TEAMS):
        team, pool = f"team{t:02d}", f"team{t:02d}_1"
        resources[pool] = [{"host": "127.0.0.1", "port": free_port(), "capacity": 1}]
        for k in range(TASKS):
            task = f"task{k}"
            for i in range(instances):
                payload = dict(team=team, team_slug=team, track="standard", task=task, instance_id=i,
                               instance_basename=f"{task}_{i}.json", instance_path=str(work / "instances" / f"{task}.json"))
                jobs.append(Job(id=Job.make_id(team, task, i), payload=payload, resource_type=pool, resource_types=[pool]))
    jobs_file, resources_file = work / "jobs.json", work / "resources.json"
    jobs_file.write_text(json.dumps([j.model_dump(mode="json") for j in jobs]))
    resources_file.write_text(json.dumps(resources))
    return jobs_file, resources_file, jobs


def postgres_cpu_seconds(pg) -> float:
    """CPU of the PostgreSQL cluster: its postmaster's process group (backends included)."""
    pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    return group_cpu_seconds(os.getpgid(pid))


# -- the campaign child --------------------------------------------------------------
def campaign_child(settings_file: Path, stop_after: int, log_file: Path) -> None:
    """Run the campaign flow in this process; halt dispatch after `stop_after` completions, exit once drained."""
    from prefect.client.orchestration import PrefectClient

    from flows.campaign import loop as campaign_loop
    from flows.campaign.flow import campaign

    started = time.monotonic()
    settings = json.loads(settings_file.read_text())
    creations: list[float] = []
    original = PrefectClient.create_flow_run_from_deployment

    async def timed(self, *args, **kwargs):
        begun = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            creations.append(time.perf_counter() - begun)

    PrefectClient.create_flow_run_from_deployment = timed
    log = open(log_file, "a", buffering=1)
    log.write(json.dumps({"event": "start", "rss_mb": rss_mb()}) + "\n")
    last = [None]

    def hook(tally, dispatcher) -> None:
        now = time.monotonic()
        loop = None if last[0] is None else now - last[0] - settings["tick_seconds"]
        last[0] = now
        log.write(json.dumps({"t": round(now - started, 3), "loop_s": loop, "done": tally.done, "in_flight": dispatcher.total_in_flight,
                              "pending": dispatcher.pending, "rss_mb": rss_mb(), "creations": creations[:]}) + "\n")
        creations.clear()
        if tally.done >= stop_after:
            dispatcher.max_in_flight, dispatcher.resume_below, dispatcher.stopped = 0, 0, True
            if dispatcher.total_in_flight == 0:
                log.write(json.dumps({"event": "stopped", "t": round(now - started, 3), "peak_rss_mb": peak_rss_mb()}) + "\n")
                log.close()
                os._exit(0)

    campaign_loop.PROGRESS_HOOKS.append(hook)
    asyncio.run(campaign(**settings))


def rss_mb() -> float:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) / 1024


def peak_rss_mb() -> float:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) / 1024


# -- phases ---------------------------------------------------------------------------
def run_phase(name: str, work: Path, settings: dict, stop_after: int, stack, pg) -> dict:
    """One campaign invocation in a child process, stopped after `stop_after` completions."""
    settings_file, log_file = work / f"{name}.settings.json", work / f"{name}.ticks.jsonl"
    settings_file.write_text(json.dumps(settings))
    cpu0 = {"server": group_cpu_seconds(stack.server.process.pid), "postgres": postgres_cpu_seconds(pg),
            "runner": group_cpu_seconds(stack.worker.pid)}
    wall0 = time.time()
    child = subprocess.run([sys.executable, __file__, "campaign", str(settings_file), str(stop_after), str(log_file)],
                           env={**os.environ, "PREFECT_API_URL": stack.api_url}, stdout=open(work / f"{name}.out", "w"),
                           stderr=subprocess.STDOUT, timeout=3600)
    wall1 = time.time()
    cpu = {"server": group_cpu_seconds(stack.server.process.pid) - cpu0["server"],
           "postgres": postgres_cpu_seconds(pg) - cpu0["postgres"],
           "runner": group_cpu_seconds(stack.worker.pid) - cpu0["runner"]}
    rows = [json.loads(line) for line in log_file.read_text().splitlines()]
    ticks = [r for r in rows if "done" in r]
    if child.returncode != 0 or not any(r.get("event") == "stopped" for r in rows):
        raise SystemExit(f"{name}: the campaign child exited {child.returncode}; see {work / (name + '.out')}")
    done = ticks[-1]["done"]
    creations = [c for r in ticks for c in r["creations"]]
    loops = [r["loop_s"] for r in ticks if r["loop_s"] is not None]
    first_tick = ticks[0]["t"]
    run_stats = asyncio.run(episode_overheads(wall0, wall1))
    dispatch_window = [r for r in ticks if r["creations"]]
    span = (dispatch_window[-1]["t"] - dispatch_window[0]["t"]) if len(dispatch_window) > 1 else 0.0
    return {
        "completed": done,
        "wall_s": round(wall1 - wall0, 1),
        "setup_s (start -> first tick: inputs, history, plan)": first_tick,
        "runs_created": len(creations),
        "dispatch_rate_runs_per_s": round(len(creations) / span, 2) if span else None,
        "creation_latency_ms p50/p95": [ms(statistics.median(creations)), ms(quantile(creations, 0.95))] if creations else None,
        "loop_ms p50/p95/max": [ms(statistics.median(loops)), ms(quantile(loops, 0.95)), ms(max(loops))] if loops else None,
        "campaign_rss_mb first tick / peak": [round(ticks[0]["rss_mb"], 1), next(r["peak_rss_mb"] for r in rows if r.get("event") == "stopped")],
        "campaign_rss_mb at start": rows[0]["rss_mb"],
        "cpu_s_per_episode": {key: round(value / max(done, 1), 3) for key, value in cpu.items()},
        **run_stats,
    }


async def episode_overheads(since: float, until: float) -> dict:
    """From the runs completed in the phase: dispatch -> Running, and Running -> end minus play time."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters as f
    from prefect.client.schemas.sorting import FlowRunSort

    flt = f.FlowRunFilter(
        tags=f.FlowRunFilterTags(all_=[f"campaign:{CAMPAIGN}"]),
        state=f.FlowRunFilterState(type=f.FlowRunFilterStateType(any_=["COMPLETED"])),
        end_time=f.FlowRunFilterEndTime(after_=datetime.fromtimestamp(since, timezone.utc), before_=datetime.fromtimestamp(until, timezone.utc)),
    )
    to_running, body = [], []
    async with get_client() as client:
        offset = 0
        while True:
            runs = await client.read_flow_runs(flow_run_filter=flt, limit=200, offset=offset, sort=FlowRunSort.ID_DESC)
            for run in runs:
                if run.start_time and run.end_time:
                    to_running.append((run.start_time - run.created).total_seconds())
                    body.append((run.end_time - run.start_time).total_seconds() - LOAD_SECONDS - STEPS * STEP_SECONDS)
            if len(runs) < 200:
                break
            offset += 200
    if not body:
        return {}
    return {"episodes_read": len(body),
            "dispatch_to_running_s p50/p95": [round(statistics.median(to_running), 2), round(quantile(to_running, 0.95), 2)],
            "running_overhead_s p50/p95 (end - start - play)": [round(statistics.median(body), 2), round(quantile(body, 0.95), 2)]}


async def fill(jobs: list, results_dir: Path, pg, reserved_from: int, api_runs: int = 1000) -> dict:
    """A Completed episode run (and metrics file) for every job not done yet, except those kept
    for the late phase (instance ids from `reserved_from` on, in every team and task).

    The first `api_runs` go through Prefect's bulk endpoint (100 a call, 4 calls at a time):
    that rate is what the API offers. The rest are copies of such a run (its row and its
    state's row, new ids, names, tags, parameters and times) inserted with SQL, since the API
    rate on this box (~10-15 runs/s) would take over an hour for 50,000.
    """
    import asyncpg
    from prefect.client.orchestration import get_client

    from flows.naming import (
        EPISODE_DEPLOYMENT,
        episode_run_name,
        episode_tags,
        idempotency_key,
    )

    todo = [job for job in jobs if not job.metrics_path(results_dir).exists() and job.payload.instance_id < reserved_from]
    body_of = lambda job: {  # noqa: E731
        "name": episode_run_name(CAMPAIGN, job.id, 1),
        "parameters": {"job": job.model_dump(mode="json"), "results_dir": str(results_dir), "campaign": CAMPAIGN},
        "tags": episode_tags(job, CAMPAIGN, job.resource_type, 1),
        "idempotency_key": idempotency_key(CAMPAIGN, job, 1),
    }
    via_api, via_sql = todo[:api_runs], todo[api_runs:]
    batches = [via_api[i:i + BULK] for i in range(0, len(via_api), BULK)]
    latencies: list[float] = []
    template: list[str] = []
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(EPISODE_DEPLOYMENT)

        async def creator() -> None:
            while batches:
                batch = batches.pop()
                body = [{**body_of(job), "state": {"type": "COMPLETED", "name": "Completed"}, "enforce_parameter_schema": False} for job in batch]
                begun = time.perf_counter()
                response = await client.request("POST", f"/deployments/{deployment.id}/create_flow_run/bulk", json=body)
                latencies.append(time.perf_counter() - begun)
                results = response.json()["results"]
                failed = [r for r in results if r["status"] != "CREATED"]
                if failed:
                    raise SystemExit(f"bulk create: {len(failed)} failed, e.g. {failed[0]}")
                template.append(results[0]["flow_run_id"])

        started = time.monotonic()
        await asyncio.gather(*(creator() for _ in range(4)))
        api_seconds = time.monotonic() - started
    started = time.monotonic()
    connection = await asyncpg.connect(pg.url.replace("postgresql+asyncpg", "postgresql"))
    try:
        run_columns = [r["column_name"] for r in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'flow_run' ORDER BY ordinal_position")]
        state_columns = [r["column_name"] for r in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'flow_run_state' ORDER BY ordinal_position")]
        now = "clock_timestamp()"
        run_override = {"id": "$1::uuid", "state_id": "$2::uuid", "name": "$3", "tags": "$4::jsonb", "parameters": "$5::jsonb",
                        "idempotency_key": "$6", "created": now, "updated": now, "expected_start_time": now,
                        "next_scheduled_start_time": "NULL", "start_time": now, "end_time": now, "state_timestamp": now}
        state_override = {"id": "$2::uuid", "flow_run_id": "$1::uuid", "created": now, "updated": now, "timestamp": now}
        select = lambda columns, override: ", ".join(override.get(c, f'"{c}"') for c in columns)  # noqa: E731
        names = lambda columns: ", ".join(f'"{c}"' for c in columns)  # noqa: E731
        statement = (
            f"WITH r AS (INSERT INTO flow_run ({names(run_columns)}) SELECT {select(run_columns, run_override)} FROM flow_run WHERE id = $7::uuid RETURNING id) "
            f"INSERT INTO flow_run_state ({names(state_columns)}) SELECT {select(state_columns, state_override)} FROM flow_run_state "
            f"WHERE id = (SELECT state_id FROM flow_run WHERE id = $7::uuid)"
        )
        import uuid

        rows = []
        for job in via_sql:
            body = body_of(job)
            rows.append((str(uuid.uuid4()), str(uuid.uuid4()), body["name"], json.dumps(body["tags"]), json.dumps(body["parameters"]),
                         body["idempotency_key"], template[0]))
        for start in range(0, len(rows), 2000):
            await connection.executemany(statement, rows[start:start + 2000])
    finally:
        await connection.close()
    sql_seconds = time.monotonic() - started
    for job in todo:
        path = job.metrics_path(results_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"evalq": {"held_seconds": 0}}')
    return {"runs": len(todo), "api_bulk_runs": len(via_api), "api_bulk_runs_per_s": round(len(via_api) / api_seconds, 1),
            "bulk_call_ms (100 runs) p50/max": [ms(statistics.median(latencies)), ms(max(latencies))] if latencies else None,
            "sql_copied_runs": len(via_sql), "sql_seconds": round(sql_seconds, 1)}


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args) -> None:
    from flows.demo.policy_server import fleet_from_resources
    from flows.runtime.local_stack import LocalStack
    from flows.runtime.postgres import LocalPostgres

    work = Path(tempfile.mkdtemp(prefix="evalq-scale-"))
    jobs_file, resources_file, jobs = build(work, args.instances)
    resources = json.loads(resources_file.read_text())
    results_dir = work / "results"
    settings = dict(jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(results_dir), name=CAMPAIGN,
                    evaluator_options={"load_seconds": LOAD_SECONDS, "steps": STEPS, "step_seconds": STEP_SECONDS},
                    prefetch=1, max_prefetch=args.max_prefetch, stats_interval=60.0, tick_seconds=0.5)
    slots = len(resources) * (1 + args.max_prefetch)
    fleet = fleet_from_resources(resources).start()
    load = {"load_before": os.getloadavg()}
    result: dict = {"command": "python " + " ".join(sys.argv), "jobs": len(jobs), "pools": len(resources), "work": str(work)}
    with LocalPostgres() as pg, LocalStack(work / "home", worker_limit=slots, ui=False, server_env={"PREFECT_API_DATABASE_CONNECTION_URL": pg.url}) as stack:
        try:
            print(f"PREFECT_API_URL={stack.api_url}  (work {work})", flush=True)
            time.sleep(5)  # the runner's start-up is not an episode's cost
            result["early"] = run_phase("early", work, settings, args.early, stack, pg)
            print(json.dumps(result["early"], indent=1), flush=True)
            reserve_per_row = -(-(args.late + 2 * slots) // (TEAMS * TASKS))
            result["fill"] = asyncio.run(fill(jobs, results_dir, pg, args.instances - reserve_per_row, args.api_runs))
            print(json.dumps(result["fill"], indent=1), flush=True)
            os.environ["PREFECT_API_URL"] = stack.api_url
            result["late"] = run_phase("late", work, settings, args.late, stack, pg)
            print(json.dumps(result["late"], indent=1), flush=True)
            result.update(load, load_after=os.getloadavg())
            out = Path(__file__).resolve().parent / "results" / time.strftime("scale-%Y%m%d-%H%M%S.json")
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"written to {out}", flush=True)
            if args.hold:
                print(f"holding: PREFECT_API_URL={stack.api_url}  (kill {os.getpid()} to stop)", flush=True)
                while True:
                    time.sleep(3600)
        finally:
            fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--early", type=int, default=400, help="completions on the empty runs table")
    runner.add_argument("--late", type=int, default=400, help="completions once the table holds 50,000 runs")
    runner.add_argument("--max-prefetch", type=int, default=1)
    runner.add_argument("--instances", type=int, default=INSTANCES, help="per team and task (250: 50,000 jobs)")
    runner.add_argument("--api-runs", type=int, default=1000, help="fill: runs created through the bulk API before SQL copies")
    runner.add_argument("--hold", action="store_true", help="keep the stack up at the end (for the evaltui bench)")
    child = sub.add_parser("campaign")
    child.add_argument("settings", type=Path)
    child.add_argument("stop_after", type=int)
    child.add_argument("log", type=Path)
    args = parser.parse_args()
    if args.command == "campaign":
        campaign_child(args.settings, args.stop_after, args.log)
    else:
        run(args)


if __name__ == "__main__":
    main()
