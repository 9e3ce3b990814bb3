"""`evalq pools apply | status`: policy-server pools as Prefect global concurrency limits."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.runtime.api import check_api
from generate.errors import InputError, exit_on_input_error

pools_app = typer.Typer(no_args_is_help=True, help="Policy-server pools (Prefect global concurrency limits).")


def _pools_command(resources: Path, action):
    import asyncio
    import os

    from prefect import get_client

    from generate.jsonio import read_model
    from generate.models import Resources

    pools = read_model(resources, Resources)
    if not os.environ.get("PREFECT_API_URL"):
        raise InputError(None, "PREFECT_API_URL is not set: which Prefect server should hold the pools?")
    check_api(os.environ["PREFECT_API_URL"])

    async def go():
        async with get_client() as client:
            return await action(client, pools)

    return asyncio.run(go())


@pools_app.command("apply")
@exit_on_input_error
def pools_apply(resources: Path = typer.Argument(Path("resources.json"))) -> None:
    """Create or update the concurrency limits of every pool and server."""
    from flows.slots.pools import apply_pools

    outcome = _pools_command(resources, apply_pools)
    counts = {kind: sum(1 for v in outcome.values() if v == kind) for kind in ("created", "updated", "unchanged", "quarantined")}
    typer.echo(f"{len(outcome)} limits: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


@pools_app.command("status")
@exit_on_input_error
def pools_status(resources: Path = typer.Argument(Path("resources.json"))) -> None:
    """Capacity, busy slots and holders of every pool and server."""
    from rich.console import Console

    from flows.cli.console import pool_status_table, pool_warnings_text
    from flows.slots.pools import pool_status

    pools = _pools_command(resources, pool_status)
    Console(width=160).print(pool_status_table(pools))
    for line in pool_warnings_text(pools):
        typer.echo(line)
