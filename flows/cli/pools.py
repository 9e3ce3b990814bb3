"""`evalq pools apply | status`: policy-server pools as Prefect global concurrency limits."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli.reading import API, HOME, on_prefect
from generate.errors import exit_on_input_error

pools_app = typer.Typer(no_args_is_help=True, help="Policy-server pools (Prefect global concurrency limits).")


def _pools_command(resources: Path, action, api: str | None, home: Path):
    """`action(client, pools)` on the server the rule finds (`flows/runtime/discovery.py`)."""
    from generate.jsonio import read_model
    from generate.models import Resources

    pools = read_model(resources, Resources)
    return on_prefect(lambda client: action(client, pools), api, home)


@pools_app.command("apply")
@exit_on_input_error
def pools_apply(resources: Path = typer.Argument(Path("resources.json")), api: Optional[str] = API, home: Path = HOME) -> None:
    """Create or update the concurrency limits of every pool and server."""
    from flows.slots.pools import apply_pools

    outcome = _pools_command(resources, apply_pools, api, home)
    counts = {kind: sum(1 for v in outcome.values() if v == kind) for kind in ("created", "updated", "unchanged", "quarantined")}
    typer.echo(f"{len(outcome)} limits: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


@pools_app.command("status")
@exit_on_input_error
def pools_status(resources: Path = typer.Argument(Path("resources.json")), api: Optional[str] = API, home: Path = HOME) -> None:
    """Capacity, busy slots and holders of every pool and server."""
    from rich.console import Console

    from flows.cli.console import pool_status_table, pool_warnings_text
    from flows.slots.pools import pool_status

    pools = _pools_command(resources, pool_status, api, home)
    Console(width=160).print(pool_status_table(pools))
    for line in pool_warnings_text(pools):
        typer.echo(line)
