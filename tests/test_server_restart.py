"""A Prefect server restarted in the middle of a campaign loses no episode and leaks no slot.

This test runs its own server (it restarts it), worker and policy servers; with
`--backend postgres` its own database, which the restarted server finds again (same URL).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from flows.campaign.flow import campaign
from flows.runtime.provisioning import prepare_api
from flows.runtime.local_stack import start_worker
from flows.runtime.api import use_api
from flows.runtime.embedded_server import EmbeddedServer
from flows.runtime.process_groups import terminate_group
from kit import limit_counts, make_fleet, make_job, write_inputs

pytestmark = pytest.mark.backends


def test_campaign_survives_a_server_restart(tmp_path, new_database):
    fleet, resources = make_fleet({"rs_1": [1], "rs_2": [1]})
    jobs = [make_job(tmp_path, "rs", "pick", i, ["rs_1", "rs_2"]) for i in range(8)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    results = tmp_path / "results"
    outcome: dict = {}
    with EmbeddedServer(tmp_path / "home", ui=False, extra_env=new_database()) as server, use_api(server.api_url), fleet:
        asyncio.run(prepare_api())
        worker = start_worker(server.api_url, limit=6, log_path=tmp_path / "worker.log")

        def run_campaign():
            state = asyncio.run(campaign(
                jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(results),
                name="restart", evaluator_options={"load_seconds": 0.2, "steps": 10, "step_seconds": 0.2},
                stats_interval=5.0, return_state=True,
            ))
            outcome["state"] = state

        thread = threading.Thread(target=contextvars.copy_context().run, args=(run_campaign,))
        try:
            thread.start()
            deadline = time.monotonic() + 180
            while not list(results.rglob("*.json")) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert list(results.rglob("*.json")), "no episode finished before the restart"
            server.restart()
            thread.join(600)
            assert not thread.is_alive(), "the campaign did not finish after the restart"
        finally:
            terminate_group(worker)
        busy = asyncio.run(limit_counts(resources))
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # ship the campaign's last logs while the server listens
    state = outcome["state"]
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["done"] + summary["already_done"] == len(jobs) and not summary["failed"]
    assert sorted(p.name for p in (results / "rs" / "metrics").iterdir()) == sorted(f"pick_{i}.json" for i in range(8))
    assert all(s.violations == 0 for s in fleet.stats().values())
    assert set(busy.values()) == {0}, busy
