"""`evalq server start|stop|status`: the user's long-lived Prefect server (`flows/runtime/user_server.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from flows.cli import server_scaled
from flows.runtime.scaled import split_environment
from flows.runtime.server_record import SERVER_FILE, ServerRecord
from flows.runtime.user_server import running_server, server_home
from generate.errors import InputError, exit_on_input_error

app = typer.Typer(no_args_is_help=True, help="The user's Prefect server, kept up across evalq commands.")
DATABASE_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"
REDIS_ENV = "PREFECT_REDIS_MESSAGING_URL"


HOME = typer.Option(None, "--home", help="Server folder (default $EVALQ_SERVER_HOME or ~/.local/state/evalq/server)")


def describe(record: ServerRecord) -> str:
    parts = [f"pid {record.pid}", f"database {record.database or 'sqlite'}"] + ([f"UI {record.ui_url}"] if record.ui_url else [])
    parts += ([f"redis {record.redis}"] if record.redis else []) + ([] if record.services else ["API replica: services apart"])
    return f"{record.api_url} ({', '.join(parts)})"


@app.command("start")
@exit_on_input_error
def start(
    database: Optional[str] = typer.Option(None, "--database", envvar=DATABASE_ENV, show_envvar=True,
                                           help="postgresql+asyncpg://user:password@host/db (default: SQLite in --home)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for runners on other nodes)"),
    port: int = typer.Option(4200, "--port", min=1, max=65535),
    home: Optional[Path] = HOME,
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the Prefect UI too"),
    detach: bool = typer.Option(False, "--detach", help="Start in the background and return once it is ready"),
    redis: Optional[str] = typer.Option(None, "--redis", envvar=REDIS_ENV, show_envvar=True,
                                        help="redis://host:6379/0: Prefect's messaging, leases and Docket there (API replicas share them)"),
    services: bool = typer.Option(True, "--services/--no-services",
                                  help="--no-services: an API replica; `evalq server services` runs the background services once"),
) -> None:
    """Run a Prefect server (in the foreground, until Ctrl-C) that campaigns and runners use."""
    from flows.runtime.user_server import check_database_url, serve

    home = (home or server_home()).resolve()
    if database:
        check_database_url(database)
    split_environment(database, redis, services)  # one line now, not from the detached child
    if detach:
        raise typer.Exit(start_detached(home, host, port, database, ui, redis=redis, services=services))
    home.mkdir(parents=True, exist_ok=True)

    def ready(record: ServerRecord) -> None:
        typer.echo(f"evalq server ready: {describe(record)}")
        if not record.services:
            typer.echo("  an API replica: runners, campaigns and evaltui use the balancer in front of the replicas")
            return
        typer.echo(f"  export PREFECT_API_URL={record.api_url}   # for runners and other tools; evalq commands find it")

    serve(home, host, port, database, ui, on_ready=ready, redis=redis, services=services)
    typer.echo("evalq server stopped")


def start_detached(home: Path, host: str, port: int, database: str | None, ui: bool, timeout: float = 120.0, *,
                   redis: str | None = None, services: bool = True) -> int:
    """`evalq server start` in a new session, its output in `<home>/server-command.log`; wait until it serves."""
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "flows.cli", "server", "start", "--home", str(home), "--host", host, "--port", str(port),
            "--ui" if ui else "--no-ui", "--services" if services else "--no-services"]
    env = {**os.environ}
    if database:
        env[DATABASE_ENV] = database  # in the environment, not on a command line others can read
    if redis:
        env[REDIS_ENV] = redis
    log_path = home / "server-command.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = running_server(home)
        if record is not None and record.pid == process.pid:
            typer.echo(f"evalq server ready: {describe(record)}")
            return 0
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise InputError(log_path, f"the server did not start: {tail[0]}")
        time.sleep(0.25)
    process.terminate()
    raise InputError(log_path, f"the server was not ready within {timeout:.0f} s")


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
