"""Running the campaign flow from the command line, with or without a Prefect server of one's own."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from flows.runtime.local_stack import LocalStack


def run_campaign(settings: dict, worker_limit: int, home: Path, stack: LocalStack | None = None) -> dict:
    """Run the campaign flow in this process and print its summary.

    Without PREFECT_API_URL (and no `stack` given), an embedded server and a local worker
    are started for the duration of the campaign (started before this module imports Prefect).
    """
    if stack is None and not os.environ.get("PREFECT_API_URL"):
        with LocalStack(home, worker_limit=worker_limit) as own_stack:
            from flows.cli.console import console

            kind = "evalq server" if own_stack.shared_server else "Embedded Prefect server"
            console.print(f"{kind}: {own_stack.ui_url}")
            return run_campaign(settings, worker_limit, home, own_stack)
    from flows.campaign.flow import campaign
    from flows.cli.console import campaign_progress, console, summary_tables
    from flows.runtime.outages import handle_api_outages
    from flows.runtime.zombies import heartbeating

    handle_api_outages()  # before the flow's first log lines, which an outage must not lose either
    with campaign_progress(), heartbeating():  # the zombie automation crashes runs silent for 6 min
        state = asyncio.run(campaign(**settings, return_state=True))
    if not state.is_completed():
        raise SystemExit(f"error: campaign flow ended {state.name}: {state.message}")
    summary = state.result()
    for table in summary_tables(summary):
        console.print(table)
    return summary
