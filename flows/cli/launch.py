"""Running the campaign flow from the command line, with or without a Prefect server of one's own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flows.runtime.discovery import Found, Source, configured_api
from flows.runtime.local_stack import LocalStack


def stack_server(stack: LocalStack) -> Found:
    """Which server a local stack found or started, for the line that says so."""
    if stack.shared_server:
        return Found(stack.api_url, Source.USER_SERVER)
    if stack.server is not None:
        return Found(stack.api_url, Source.FOLDER, home=stack.home, started=True)
    return configured_api() or Found(stack.api_url, Source.ENVIRONMENT)


def run_campaign(settings: dict, worker_limit: int, home: Path, stack: LocalStack | None = None) -> dict:
    """Run the campaign flow in this process and print its summary.

    Without a configured server (`--api`, PREFECT_API_URL) and no `stack` given, a local stack
    (the user's `evalq server` or this folder's embedded database, with a local runner) serves
    the campaign's duration (started before this module imports Prefect).
    """
    if stack is None and configured_api() is None:
        with LocalStack(home, worker_limit=worker_limit) as own_stack:
            stack_server(own_stack).announce()
            return run_campaign(settings, worker_limit, home, own_stack)
    from flows.campaign.flow import campaign
    from flows.cli.console import campaign_progress, console, summary_tables
    from flows.runtime.zombies import heartbeating

    with campaign_progress(settings.get("stats_interval", 60.0)), heartbeating():  # the zombie automation crashes runs silent for 90 s
        state = asyncio.run(campaign(**settings, return_state=True))
    if not state.is_completed():
        raise SystemExit(f"error: campaign flow ended {state.name}: {state.message}")
    summary = state.result()
    for table in summary_tables(summary):
        console.print(table)
    return summary
