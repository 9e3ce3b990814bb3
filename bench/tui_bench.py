"""Benchmark `evaltui` against a Prefect server holding 50,000 episode flow runs.

    python bench/tui_bench.py serve --quiet &       # server on :4298 without background services
    PREFECT_API_URL=http://127.0.0.1:4298/api python bench/tui_bench.py seed --runs 50000
    kill %1; python bench/tui_bench.py serve &      # same database, services on (events persist)
    PREFECT_API_URL=http://127.0.0.1:4298/api python bench/tui_bench.py activity
    PREFECT_API_URL=http://127.0.0.1:4298/api python bench/tui_bench.py measure

`seed` writes runs through the API, one request at a time (SQLite serialises writers:
parallel requests were slower), plus pool limits and the campaign plan; `--quiet` turns
off the server's event services, which triples the insert rate. `activity` adds slot
events and logs. `measure` times each call a refresh makes (the same `tui.source.Source`
coroutines the app's workers run) and the peak memory, then drives the real app headless
and reports refresh times, time to a full team x task table and UI-loop stalls.
Results go in bench/tui.md.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CAMPAIGN = "bench"
STATE_MIX = ["completed"] * 40 + ["skipped"] * 2 + ["failed"] * 2 + [
    "not_retryable", "crashed", "cancelled", "scheduled", "pending", "waiting", "running", "loading",
]
QUIET_SERVICES = ("TRIGGERS", "EVENT_PERSISTER", "TASK_RUN_RECORDER", "FOREMAN", "CANCELLATION_CLEANUP",
                  "PAUSE_EXPIRATIONS", "REPOSSESSOR", "EVENT_LOGGER")
POOLS = {f"pool_{p}": [f"10.0.{p}.{s}:8000" for s in range(5)] for p in range(4)}


def episodes(runs: int):
    from tui import seed

    teams = [f"team_{t:02d}" for t in range(25)]
    tasks = [f"task_{k}" for k in range(8)]
    per_row = max(1, runs // (len(teams) * len(tasks)))
    eps = seed.grid(teams, tasks, per_row, STATE_MIX)
    pools = list(POOLS)
    return [ep.__class__(ep.team_slug, ep.task, ep.instance_id, ep.state, pools[int(ep.team_slug[-2:]) % len(pools)]) for ep in eps]


async def seed_all(runs: int) -> None:
    from prefect.client.orchestration import get_client

    from flows import naming
    from tui import seed

    eps = episodes(runs)
    async with get_client() as client:
        await client.request("POST", "/variables/", json={"name": naming.campaign_plan_variable(CAMPAIGN), "value": {"total": len(eps), "pools": POOLS}})
        await seed.seed_limits(client, [seed.SeedServer(addr, pool, 1, 1 if i % 2 == 0 else 0) for pool, addrs in POOLS.items() for i, addr in enumerate(addrs)])
        started = time.monotonic()
        chunk = 2000
        for start in range(0, len(eps), chunk):
            await seed.seed_episodes(client, CAMPAIGN, eps[start:start + chunk])
            rate = (start + chunk) / (time.monotonic() - started)
            print(f"{start + chunk} runs, {rate:.0f}/s", flush=True)
        print(f"seeded {len(eps)} runs in {time.monotonic() - started:.0f} s")


async def seed_activity() -> None:
    """Slot events and logs (needs the server's event persister on)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from flows import naming
    from tui import seed
    from tui.gateway import run_filter

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=run_filter([naming.campaign_tag(CAMPAIGN)], types=["RUNNING"]), limit=20, sort=FlowRunSort.NAME_ASC)
        last = [(run.name, run.id) for run in runs]
        now = datetime.now(timezone.utc)
        events = [seed.slot_event(naming.SLOT_ACQUIRED, addr, pool, last[i][1], last[i][0], now - timedelta(minutes=i))
                  for i, (pool, addr) in enumerate((p, a) for p, addrs in POOLS.items() for a in addrs[::2])]
        await seed.emit_events(client, events)
        for job_id, run_id in last:
            await seed.write_logs(client, run_id, [(20, f"{job_id}: step {n}") for n in range(200)])
        print(f"{len(events)} slot events, {len(last) * 200} log lines")


async def measure(rounds: int, campaign: str = CAMPAIGN):
    """Median and worst time of each call a refresh makes, against the seeded campaign;
    returns the run index its first full scan built."""
    from tui.source import Source

    timings: dict[str, list[float]] = {}
    async with Source(campaign=campaign) as source:
        started = time.perf_counter()
        await source.sync_index(max_pages=10**6)
        print(f"run index, first full scan: {time.perf_counter() - started:.1f} s for {len(source.index.runs):,} runs")
        first_row = next(((r.team, r.task) for r in source.index.rows()), ("", ""))
        calls = (
            ("queue (index sync + plan and pause)", source.queue),
            ("rows page (index sync + aggregate)", lambda: source.rows(0)),
            ("episodes page (50 runs)", lambda: source.episodes(*first_row, page=2)),
            ("pools (20 servers)", source.pools),
            ("log backfill (200 lines)", source.backfill_logs),
        )
        for _ in range(rounds):
            for name, call in calls:
                started = time.perf_counter()
                await call()
                timings.setdefault(name, []).append(time.perf_counter() - started)
    for name, values in timings.items():
        print(f"{name:36s} median {statistics.median(values) * 1000:7.0f} ms  max {max(values) * 1000:7.0f} ms")
    print(f"peak RSS (data layer): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return source.index


async def measure_app(seconds: float, campaign: str = CAMPAIGN, index=None) -> None:
    """Drive the real app headless: refresh times, time to a full team x task table, UI stalls.
    With `index` (from `measure`), the app starts from that scanned index, as after its own
    first scan: what a refresh costs in the steady state."""
    from tui.app import EvalTui

    app = EvalTui(campaign=campaign, refresh_seconds=2.0)
    if index is not None:
        app.source.index = index
    async with app.run_test(size=(160, 48)) as pilot:
        started = time.monotonic()
        indexed_after = None
        durations, indexed = [], []
        seen = 0
        while time.monotonic() - started < seconds:
            await pilot.pause(0.2)
            if app.refreshes != seen:
                seen = app.refreshes
                durations.append(app.last_refresh_seconds)
                if indexed_after is not None:
                    indexed.append(app.last_refresh_seconds)
            if indexed_after is None and app.source.index.scanned:
                indexed_after = time.monotonic() - started
        full = f"{indexed_after:.0f} s" if indexed_after is not None else f"not within {seconds:.0f} s"
        print(f"app: {app.refreshes} refreshes in {seconds:.0f} s; refresh median {statistics.median(durations or [0]) * 1000:.0f} ms, "
              f"max {max(durations or [0]) * 1000:.0f} ms; full team x task table after {full}; "
              f"max UI-loop stall {app.max_stall * 1000:.0f} ms")
        if indexed:
            print(f"app, once indexed: {len(indexed)} refreshes, median {statistics.median(indexed) * 1000:.0f} ms, "
                  f"p90 {sorted(indexed)[int(0.9 * len(indexed))] * 1000:.0f} ms, max {max(indexed) * 1000:.0f} ms")
    print(f"peak RSS (data layer + app): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--home", default="/tmp/tuibench/home", help="the server's PREFECT_HOME (its SQLite database)")
    serve.add_argument("--port", type=int, default=4298)
    serve.add_argument("--quiet", action="store_true", help="no event, trigger or recorder services (fast seeding)")
    sub.add_parser("seed").add_argument("--runs", type=int, default=50_000)
    sub.add_parser("activity")
    meas = sub.add_parser("measure")
    meas.add_argument("--rounds", type=int, default=5)
    meas.add_argument("--app-seconds", type=float, default=60.0)
    meas.add_argument("--reuse-index", action="store_true", help="the app starts from the index the first scan built")
    meas.add_argument("--campaign", default=CAMPAIGN, help="e.g. `scale`, the campaign of bench/scale_bench.py --hold (PostgreSQL)")
    args = parser.parse_args()
    if args.command == "serve":
        import os

        from flows.runtime.embedded_server import EmbeddedServer

        if args.quiet:
            os.environ.update({f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in QUIET_SERVICES})
            os.environ["PREFECT_SERVER_EVENTS_STREAM_OUT_ENABLED"] = "false"
        server = EmbeddedServer(Path(args.home), port=args.port, ui=False).start()
        print(f"PREFECT_API_URL={server.api_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            server.stop()
    elif args.command == "seed":
        asyncio.run(seed_all(args.runs))
    elif args.command == "activity":
        asyncio.run(seed_activity())
    else:
        index = asyncio.run(measure(args.rounds, args.campaign))
        asyncio.run(measure_app(args.app_seconds, args.campaign, index if args.reuse_index else None))


if __name__ == "__main__":
    main()
