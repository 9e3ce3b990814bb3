"""`evalq server migrate|services|haproxy-config`: Prefect split across processes for scale
(`flows/runtime/scaled.py`): API replicas (`evalq server start --redis URL --no-services`) behind
a balancer, Prefect's background services once beside them, the database migrated once first."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from flows.runtime.scaled import (
    check_redis_installed,
    check_redis_url,
    REDIS_ENV,
    check_shared_database,
    redact_url,
)
from generate.errors import InputError, exit_on_input_error

DATABASE = typer.Option(None, "--database", envvar=["PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"],
                        show_envvar=True,
                        help="postgresql+asyncpg://user:password@host/db, shared by every replica")
REDIS = typer.Option(None, "--redis", envvar=REDIS_ENV, show_envvar=True,
                     help="redis://host:6379/0, shared by every replica (the Docket takes the next database, /1)")


@exit_on_input_error
def migrate(database: Optional[str] = DATABASE) -> None:
    """Migrate the database and register Prefect's block types: once, before the API replicas start."""
    from flows.runtime.scaled import migrate as migrate_database

    database = check_shared_database(database, "evalq server migrate")
    migrate_database(database)
    typer.echo(f"evalq server migrate: {redact_url(database)} is ready for API replicas (`evalq server start --no-services`)")


@exit_on_input_error
def services(
    database: Optional[str] = DATABASE,
    redis: Optional[str] = REDIS,
    home: Optional[Path] = typer.Option(None, "--home", help="Its Prefect home (default: <server home>/services)"),
) -> None:
    """Prefect's background services (repossessor, triggers, event persister, ...) for API replicas
    started with --no-services: one such process, in the foreground (supervise it: it has no port)."""
    from flows.runtime.scaled import services_argv, services_environment
    from flows.runtime.user_server import server_home

    database = check_shared_database(database, "evalq server services")
    if not redis:
        raise InputError(None, "--redis: the services and the API replicas share events, leases and the Docket through Redis")
    check_redis_url(redis)
    check_redis_installed()
    home = (home or server_home() / "services").resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = services_environment(home / "prefect", database, redis)
    typer.echo(f"evalq server services: Prefect's background services on {redact_url(database)}, Redis {redact_url(redis)} "
               "(until Ctrl-C or SIGTERM)")
    sys.stdout.flush()
    argv = services_argv()
    os.execve(argv[0], argv, env)  # the supervisor's signals reach Prefect's process itself


@exit_on_input_error
def haproxy_config(
    listen: str = typer.Option("0.0.0.0:4200", "--listen", help="host:port runners, campaigns and browsers use"),
    replica: List[str] = typer.Option([], "--replica", help="host:port of an API replica (repeatable)"),
    output: Optional[Path] = typer.Option(None, "--output", help="Write it here (default: print it)"),
) -> None:
    """haproxy.cfg for API replicas: health checks, failover, websockets (README, "Several API replicas")."""
    from flows.runtime.balancer import haproxy_config as render
    from generate.jsonio import write_atomic

    config = render(listen, replica)
    if output is None:
        typer.echo(config, nl=False)
        return
    write_atomic(output, config)
    typer.echo(f"written {output}: haproxy -f {output}")
