"""Prefect split across processes: API replicas and the background services on one PostgreSQL
database and one Redis (what `evalq server start --redis URL --no-services`, `evalq server
services` and `evalq server migrate` run).

Every process of the split shares the database, Redis messaging (events and logs between the
replicas and the services), Redis causal ordering (triggers), the Redis lease storage (slots)
and the Docket (the services' task queue). The database is migrated once, before the replicas
start (`migrate`): replicas starting together on a fresh database would each migrate it and
register Prefect's block types at once (unique-key errors). The settings' names and what they
do were checked in Prefect 3.9.1 with prefect-redis 0.3.0 (README, "Several API replicas").
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from flows.runtime.database_template import PREPARE_DATABASE, SKIP_DATABASE_PREPARATION
from flows.runtime.embedded_server import server_environment
from generate.errors import InputError

REDIS_SCHEMES = ("redis://", "rediss://")
POSTGRES_SCHEME = "postgresql+asyncpg://"
DATABASE_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"
REDIS_ENV = "PREFECT_REDIS_MESSAGING_URL"
"""`--redis`: the URL of Prefect's Redis messaging (prefect-redis reads it too)."""
REDIS_LEASES = "prefect_redis.lease_storage"
PREPARE_LOCK = "evalq:prepare-api"

REPLICA_ENVIRONMENT = {
    **SKIP_DATABASE_PREPARATION,  # `evalq server migrate` did it, once
    # Above haproxy's reuse of idle server connections: a connection uvicorn closes at 5 s while
    # the balancer sends on it would answer 502 (Prefect's client retries those; browsers do not).
    "PREFECT_SERVER_API_KEEPALIVE_TIMEOUT": "65",
}
"""An API replica (`--no-services`): the database is prepared already."""


def check_redis_url(url: str) -> str:
    """`url` if it is a Redis URL (redis:// or rediss://); else one line naming `--redis`."""
    parts = urlsplit(url)
    expected = f"--redis: expected redis://[user:password@]host[:port][/db] or rediss://..., got {redact_url(url)!r}"
    if not url.startswith(REDIS_SCHEMES) or not parts.hostname:
        raise InputError(None, expected)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise InputError(None, expected + " (its port is not a number)") from None
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise InputError(None, f"--redis: the path is a database number (/0), got {redact_url(url)!r} "
                               "(a password with / in it must be written %2F)")
    return url


def check_shared_database(database: str | None, what: str) -> str:
    """The PostgreSQL URL that processes of a split share; one line if there is none."""
    if not database or not database.startswith(POSTGRES_SCHEME):
        raise InputError(None, f"{what} needs PostgreSQL shared by every process (--database {POSTGRES_SCHEME}...): "
                               "SQLite serves one process")
    return database


def redact_url(url: str) -> str:
    """A URL for printing: whatever comes before its last `@` (user and password, even one with
    `/`, `#` or `?` in it) shown as `***`, and no query (`?password=...`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host.split('?', 1)[0]}"


def docket_url(redis_url: str) -> str:
    """The Docket's Redis database: the one after messaging's (`/0` -> `/1`), keys of the two apart."""
    parts = urlsplit(redis_url)
    database = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{database + 1}"))


def redis_environment(redis_url: str) -> dict[str, str]:
    """Prefect's settings for Redis messaging, ordering, leases and the Docket at `redis_url`.

    `PREFECT_SERVER_DOCKET_URL` set in the environment wins (a Docket elsewhere)."""
    check_redis_url(redis_url)
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": REDIS_LEASES,
        "PREFECT_REDIS_MESSAGING_URL": redis_url,
        "PREFECT_SERVER_DOCKET_URL": os.environ.get("PREFECT_SERVER_DOCKET_URL") or docket_url(redis_url),
        # An events socket kept open (a runner's slot releases) holds its events until 5 are
        # batched or 10 s pass: waiters on any replica would hear of a release up to 10 s late.
        "PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE": "1",
    }


def check_redis_installed() -> None:
    """One line when prefect-redis is missing (the `scale` extra)."""
    from importlib.util import find_spec

    if find_spec("prefect_redis") is None:  # found without importing it (and Prefect)
        raise InputError(None, "--redis needs prefect-redis: pip install 'eval-jobqueue[scale]'")


def split_environment(database: str | None, redis_url: str | None, services: bool) -> dict[str, str]:
    """What `evalq server start` adds for `--redis` and `--no-services` (an API replica); one
    line for a replica without PostgreSQL or Redis to share."""
    env: dict[str, str] = {}
    if not services:
        check_shared_database(database, "--no-services")
        if not redis_url:
            raise InputError(None, "--no-services needs --redis: the replicas and the services share events, "
                                   "leases and the Docket through it")
        env.update(REPLICA_ENVIRONMENT)
    if redis_url:
        env.update(redis_environment(redis_url))
        check_redis_installed()
    return env


def services_environment(home: Path, database: str, redis_url: str) -> dict[str, str]:
    """The environment of `prefect server services start` beside API replicas."""
    return {**os.environ, **server_environment(home), **REPLICA_ENVIRONMENT, DATABASE_ENV: database,
            **redis_environment(redis_url)}


def services_argv() -> list[str]:
    """Prefect's background services (scheduler-free: evalq dispatches just in time) in the foreground."""
    return [sys.executable, "-m", "prefect", "server", "services", "start"]


def migrate(database: str, timeout: float = 600.0) -> None:
    """Prefect's migrations and block types on `database`: what a server does at its first start,
    done once for every replica. Safe to repeat (nothing to do then)."""
    env = {**os.environ, DATABASE_ENV: database, "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    try:
        subprocess.run([sys.executable, "-c", PREPARE_DATABASE], env=env, check=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or [f"exit code {exc.returncode}"]
        raise InputError(None, f"--database: migrating {redact_url(database)} failed: {last[0]}") from None
    except subprocess.TimeoutExpired:
        raise InputError(None, f"--database: migrating {redact_url(database)} took over {timeout:.0f} s") from None


@contextlib.contextmanager
def one_replica_at_a_time(redis_url: str | None, timeout: float = 300.0) -> Iterator[None]:
    """Held while a replica applies evalq's work pools, deployments and automation: replicas
    starting together would race Prefect's read-then-create (two automations, a work queue's
    unique key). A Redis lock that expires if its holder dies; nothing without Redis."""
    if not redis_url:
        yield
        return
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(redis_url)
    try:
        lock = client.lock(PREPARE_LOCK, timeout=timeout, blocking_timeout=timeout)
        if not lock.acquire():
            raise InputError(None, f"--redis: another replica held {PREPARE_LOCK!r} for {timeout:.0f} s")
    except RedisError as exc:
        raise InputError(None, f"--redis: {redact_url(redis_url)} unreachable ({exc.__class__.__name__}: {exc})") from None
    try:
        yield
    finally:
        with contextlib.suppress(RedisError):
            lock.release()
        client.close()
