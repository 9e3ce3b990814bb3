"""`evalq server start|stop|status`: the user's long-lived Prefect server (`flows/runtime/user_server.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli import server_scaled
from flows.runtime.scaled import DATABASE_ENV, REDIS_ENV, split_environment
from flows.runtime.server_record import SERVER_FILE, ServerRecord
from flows.runtime.user_server import running_server, server_home
from generate.errors import exit_on_input_error

app = typer.Typer(no_args_is_help=True, help="The user's Prefect server, kept up across evalq commands.")


HOME = typer.Option(None, "--home", help="Server folder (default $EVALQ_SERVER_HOME or ~/.local/state/evalq/server)")


def describe(record: ServerRecord) -> str:
    """Its URL for other nodes (when it has one) and for this host, pid, database, UI, Redis."""
    parts = ([f"here {record.api_url}"] if record.advertised_url else []) + [f"pid {record.pid}", f"database {record.database or 'sqlite'}"]
    parts += [f"UI {record.ui_url}"] if record.ui_url else []
    parts += ([f"redis {record.redis}"] if record.redis else []) + ([] if record.services else ["API replica: services apart"])
    return f"{record.advertised_url or record.api_url} ({', '.join(parts)})"


@app.command("start")
@exit_on_input_error
def start(
    database: Optional[str] = typer.Option(None, "--database", envvar=DATABASE_ENV, show_envvar=True,
                                           help="postgresql+asyncpg://user:password@host/db (default: SQLite in --home)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for runners on other nodes)"),
    port: int = typer.Option(4200, "--port", min=1, max=65535),
    advertise: Optional[str] = typer.Option(None, "--advertise", help="API URL other nodes use (default with --host 0.0.0.0: this host's name or address)"),
    home: Optional[Path] = HOME,
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the Prefect UI too"),
    detach: bool = typer.Option(False, "--detach", help="Start in the background and return once it is ready"),
    redis: Optional[str] = typer.Option(None, "--redis", envvar=REDIS_ENV, show_envvar=True,
                                        help="redis://host:6379/0: Prefect's messaging, leases and Docket there (API replicas share them)"),
    services: bool = typer.Option(True, "--services/--no-services",
                                  help="--no-services: an API replica; `evalq server services` runs the background services once"),
) -> None:
    """Run a Prefect server (in the foreground, until Ctrl-C) that campaigns and runners use."""
    from flows.runtime.user_server import (
        advertised_url,
        check_database_url,
        serve,
        start_in_background,
    )

    home = (home or server_home()).resolve()
    if database:
        check_database_url(database)
    advertised_url(host, port, advertise)  # a bad --advertise is refused before anything starts
    split_environment(database, redis, services)  # one line now, not from the detached child
    if detach:
        ready(start_in_background(home, host, port, database, ui, advertise, redis=redis, services=services))
        return
    home.mkdir(parents=True, exist_ok=True)
    serve(home, host, port, database, ui, on_ready=ready, advertise=advertise, redis=redis, services=services)
    typer.echo("evalq server stopped")


def ready(record: ServerRecord) -> None:
    typer.echo(f"evalq server ready: {describe(record)}")
    if not record.services:
        typer.echo("  an API replica: runners, campaigns and evaltui use the balancer in front of the replicas")
        return
    typer.echo(f"  export PREFECT_API_URL={record.advertised_url or record.api_url}   # for runners and other tools; "
               "evalq commands find it")


@app.command("status")
def status(home: Optional[Path] = HOME) -> None:
    """Say whether the server is up, where, and on which database; exit 1 if it is not."""
    home = (home or server_home()).resolve()
    record = running_server(home)
    if record is None:
        typer.echo(f"no evalq server running (home {home}); start one with `evalq server start --detach`")
        raise typer.Exit(1)
    typer.echo(f"evalq server running: {describe(record)}")


@app.command("stop")
def stop(home: Optional[Path] = HOME) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 20 s)."""
    from flows.runtime.user_server import stop_server

    home = (home or server_home()).resolve()
    record = stop_server(home)
    typer.echo(f"evalq server stopped ({record.api_url})" if record else f"no evalq server was running (home {home / SERVER_FILE})")


# Prefect split across processes (API replicas, the services apart): flows/cli/server_scaled.py.
app.command("migrate")(server_scaled.migrate)
app.command("services")(server_scaled.services)
app.command("haproxy-config")(server_scaled.haproxy_config)
