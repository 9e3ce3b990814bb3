"""`evalq server`: one Prefect server per user, kept up across commands, on SQLite or PostgreSQL.

A campaign command without PREFECT_API_URL uses this server when it is up (found through
`<server home>/server.json`), so it pays neither Prefect's start (7-10 s here) nor its stop.
The server is ready for `evalq runner` and `evalq campaign run` as soon as it answers: the
local and runner work pools, their deployments and the zombie automation are applied.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from flows.runtime.api import use_api
from flows.runtime.embedded_server import EmbeddedServer
from flows.runtime.host import port_is_free, process_alive
from flows.runtime.process_groups import terminate
from flows.runtime.provisioning import prepare_api
from flows.runtime.scaled import one_replica_at_a_time, redact_url, split_environment
from flows.runtime.server_record import (
    SERVER_FILE,
    ServerRecord,
    live_record,
    read_record,
)
from generate.errors import InputError
from generate.jsonio import write_atomic

DATABASE_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite://")
SERVER_POOLS = (("evalq-local", "local"), ("evalq-runner", "runner"))
"""(work pool, deployment name in prefect.yaml): both run episodes in `evalq runner` processes."""


def server_home() -> Path:
    """`$EVALQ_SERVER_HOME`, else `$XDG_STATE_HOME/evalq/server` (`~/.local/state/evalq/server`)."""
    if os.environ.get("EVALQ_SERVER_HOME"):
        return Path(os.environ["EVALQ_SERVER_HOME"]).resolve()
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "evalq" / "server"


def running_server(home: Path | None = None) -> ServerRecord | None:
    """The record of the user's server if its process lives and its API answers."""
    return live_record(home or server_home())


def check_database_url(url: str) -> str:
    if not url.startswith(DATABASE_SCHEMES):
        raise InputError(None, f"--database: expected a URL starting with {' or '.join(DATABASE_SCHEMES)}, got {redact(url)!r}")
    return url


def redact(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: show only its scheme
        return url.split("://", 1)[0] + "://..."


def serve(home: Path, host: str, port: int, database: str | None, ui: bool, on_ready=None, *,
          redis: str | None = None, services: bool = True) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM or until it exits by itself.

    `redis`: Prefect's messaging, ordering, leases and Docket there; `services=False`: an API
    replica, its background services apart (`evalq server services`; `flows/runtime/scaled.py`)."""
    import asyncio

    if (running := running_server(home)) is not None:
        raise InputError(home / SERVER_FILE, f"an evalq server already runs at {running.api_url} (pid {running.pid}); "
                                             "`evalq server stop` first")
    if not port_is_free(port):
        raise InputError(None, f"--port: {port} is in use")
    extra = {"PREFECT_API_DATABASE_CONNECTION_URL": check_database_url(database)} if database else {}
    extra.update(split_environment(database, redis, services))
    server = EmbeddedServer(home / "prefect", port=port, ui=ui, extra_env=extra, host=host, services=services)
    stop = []
    previous = {sig: signal.signal(sig, lambda *_: stop.append(True)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        with use_api(server.api_url), one_replica_at_a_time(redis):
            asyncio.run(prepare_api("runner", SERVER_POOLS))
        record = ServerRecord(api_url=server.api_url, pid=os.getpid(), database=redact(database) if database else "sqlite",
                              ui_url=server.ui_url if ui else None, redis=redact_url(redis) if redis else None,
                              services=services)
        write_atomic(home / SERVER_FILE, record.model_dump_json() + "\n")
        if on_ready:
            on_ready(record)
        while not stop and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
        if not stop:
            raise InputError(server.log_path, f"the Prefect server exited with code {server.process.returncode}")
    finally:
        if (written := read_record(home)) is not None and written.pid == os.getpid():
            (home / SERVER_FILE).unlink(missing_ok=True)
        server.stop(timeout=10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_server(home: Path, timeout: float = 20.0) -> ServerRecord | None:
    """SIGTERM the user's server command and wait for it to go; the record it had, or None."""
    record = read_record(home)
    if record is None or record.pid <= 0 or not process_alive(record.pid):
        (home / SERVER_FILE).unlink(missing_ok=True)
        return None
    terminate(record.pid, timeout, group=False)  # it stops its own server's group
    (home / SERVER_FILE).unlink(missing_ok=True)
    return record
