"""Benchmark: what episodes that wait for a busy policy server cost the Prefect server.

    python bench/waiting_bench.py --waiting 50 --window 60 [--database postgres]

One capacity-1 policy server, one long episode holding it and `--waiting` more episodes of the
same pool loaded and waiting for it (the campaign prefetches them all). Once they all wait,
measures for `--window` seconds, without polling anything itself: CPU of the Prefect server
(and database), of the runner and of the campaign, and the API calls by route. Issue 9's
question: the server's CPU while 50 episodes wait should be a small fraction of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_bench import database_cpu_seconds, wait_until_started, write_job  # noqa: E402
from cost import api_calls, group_cpu_seconds, write_result  # noqa: E402

from flows.demo.policy_server import fleet_from_resources  # noqa: E402
from flows.naming import WAITING_STATE  # noqa: E402
from flows.runtime.host import free_port  # noqa: E402
from flows.runtime.local_stack import LocalStack  # noqa: E402
from flows.runtime.postgres import LocalPostgres  # noqa: E402
from flows.runtime.process_groups import terminate_group  # noqa: E402


async def count_waiting() -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStateName

    async with get_client() as client:
        return await client.count_flow_runs(
            flow_run_filter=FlowRunFilter(state=dict(name=FlowRunFilterStateName(any_=[WAITING_STATE]))))


def wait_for_waiters(expected: int, campaign: subprocess.Popen, timeout: float = 600.0) -> float:
    """Seconds until `expected` episodes are in WaitingForServer."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if campaign.poll() is not None:
            raise SystemExit(f"the campaign exited with code {campaign.returncode}")
        if asyncio.run(count_waiting()) >= expected:
            return time.monotonic() - started
        time.sleep(2)
    raise SystemExit(f"{expected} episodes were not all waiting after {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, default=50)
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured once all wait")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="evalq-waiting-"))
    resources = {"solo_1": [{"host": "127.0.0.1", "port": free_port(), "capacity": 1}]}
    jobs = [write_job(work, "solo", "reach", i, ["solo_1"]) for i in range(args.waiting + 1)]
    (work / "jobs.json").write_text(json.dumps([job.model_dump(mode="json") for job in jobs]))
    (work / "resources.json").write_text(json.dumps(resources))
    hold = args.window * 4 + 600  # the first episode holds the server through the whole measurement
    fleet = fleet_from_resources(resources, work / "busy.jsonl").start()
    server_env = {"PREFECT_SERVER_LOGGING_LEVEL": "INFO"}
    postgres = LocalPostgres().start() if args.database == "postgres" else None
    if postgres is not None:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres.url
    try:
        with LocalStack(work / "home", worker_limit=args.waiting + 1, ui=False, server_env=server_env) as stack:
            wait_until_started(stack.home / "worker.log")
            argv = [sys.executable, "-m", "flows.cli", "campaign", "run", "--jobs", str(work / "jobs.json"),
                    "--resources", str(work / "resources.json"), "--results-dir", str(work / "results"),
                    "--name", "waiting", "--prefetch", str(args.waiting), "--max-prefetch", str(args.waiting),
                    "--evaluator-option", "load_seconds=1", "--evaluator-option", f"steps={int(hold)}",
                    "--evaluator-option", "step_seconds=1"]
            with open(work / "campaign.log", "wb") as log:
                campaign = subprocess.Popen(argv, env={**os.environ, "PREFECT_API_URL": stack.api_url},
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                ready = wait_for_waiters(args.waiting, campaign)
                time.sleep(5)  # the last one's wait settles
                log_start = stack.server.log_path.stat().st_size
                before = {"server": group_cpu_seconds(stack.server.process.pid), "database": database_cpu_seconds(postgres),
                          "runner": group_cpu_seconds(stack.worker.pid), "campaign": group_cpu_seconds(campaign.pid)}
                time.sleep(args.window)
                after = {"server": group_cpu_seconds(stack.server.process.pid), "database": database_cpu_seconds(postgres),
                         "runner": group_cpu_seconds(stack.worker.pid), "campaign": group_cpu_seconds(campaign.pid)}
                with open(stack.server.log_path, encoding="utf-8", errors="replace") as server_log:
                    server_log.seek(log_start)
                    calls = api_calls(server_log.read())
            finally:
                os.killpg(campaign.pid, signal.SIGTERM)
                terminate_group(campaign, 10)
    finally:
        fleet.stop()
        if postgres is not None:
            postgres.stop()
    cores = {name: round((after[name] - before[name]) / args.window, 3) for name in after}
    result = {
        "command": "python " + " ".join(sys.argv),
        "settings": vars(args),
        "seconds_until_all_waited": round(ready, 1),
        "cpu_cores_while_waiting": cores,
        "server_cpu_ms_per_waiting_episode_per_second": round(1000 * cores["server"] / args.waiting, 2) if args.waiting else None,
        "api_calls_per_second": round(sum(calls.values()) / args.window, 2),
        "api_calls_by_route": dict(calls.most_common()),
    }
    write_result("waiting", result)


if __name__ == "__main__":
    main()
