"""`evalq server`: one Prefect server per user, kept up across commands, on SQLite or PostgreSQL.

Every command finds it by the rule (`discovery.py`, step 3: `<server home>/server.json`, its
process alive and its API answering), so a campaign pays neither Prefect's start (7-10 s here)
nor its stop. The server is ready for `evalq runner` and `evalq campaign run` as soon as it
answers: the local and runner work pools, their deployments and the zombie automation are
applied. Listening on every interface, it records the URL other nodes use (`advertised_url`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flows.runtime.api import use_api
from flows.runtime.embedded_server import EmbeddedServer
from flows.runtime.host import (
    address_for_other_nodes,
    free_port,
    port_is_free,
    process_alive,
)
from flows.runtime.process_groups import terminate
from flows.runtime.provisioning import prepare_api
from flows.runtime.scaled import (
    DATABASE_ENV,
    REDIS_ENV,
    one_replica_at_a_time,
    redact_url,
    split_environment,
)
from flows.runtime.server_record import (
    SERVER_FILE,
    ServerRecord,
    live_record,
    read_record,
)
from generate.errors import InputError
from generate.jsonio import write_atomic

DATABASE_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite://")
DEFAULT_PORT = 4200
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
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
        raise InputError(None, f"--database: expected a URL starting with {' or '.join(DATABASE_SCHEMES)}, got {redact_url(url)!r}")
    return url


def advertised_url(host: str, port: int, advertise: str | None = None) -> str | None:
    """The API URL other nodes use: `advertise` (`/api` added to a bare address), else, on
    every interface (`0.0.0.0`), this host's name or address; None when it listens on loopback
    only (or on the one address its own URL names)."""
    from urllib.parse import urlsplit

    if advertise:
        parts = urlsplit(advertise)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(None, f"--advertise {advertise!r}: expected a URL such as http://head-node:{port}/api")
        return advertise.rstrip("/") + ("/api" if parts.path in ("", "/") else "")
    if host in WILDCARD_HOSTS:
        return f"http://{address_for_other_nodes()}:{port}/api"
    return None


def serve(home: Path, host: str, port: int, database: str | None, ui: bool, on_ready=None,
          advertise: str | None = None, *, redis: str | None = None, services: bool = True) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM or until it exits by itself.

    `redis`: Prefect's messaging, ordering, leases and Docket there; `services=False`: an API
    replica, its background services apart (`evalq server services`; `flows/runtime/scaled.py`)."""
    import asyncio

    shared_url = advertised_url(host, port, advertise)

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
        try:
            server.start()
        except RuntimeError as exc:  # exited or never ready (a bad --redis, an unreachable database): its log says why
            raise InputError(server.log_path, str(exc).split(";")[0]) from None
        with use_api(server.api_url), one_replica_at_a_time(redis):
            asyncio.run(prepare_api("runner", SERVER_POOLS))
        record = ServerRecord(api_url=server.api_url, pid=os.getpid(), database=redact_url(database) if database else "sqlite",
                              ui_url=server.ui_url if ui else None, advertised_url=shared_url,
                              redis=redact_url(redis) if redis else None, services=services)
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


def start_in_background(home: Path, host: str = "127.0.0.1", port: int | None = None, database: str | None = None,
                        ui: bool = True, advertise: str | None = None, timeout: float = 120.0, *,
                        redis: str | None = None, services: bool = True) -> ServerRecord:
    """`evalq server start` in a new session (its output in `<home>/server-command.log`), once it
    serves; port 4200 unless busy (`port=None`), else a free one."""
    home.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
    argv = [sys.executable, "-m", "flows.cli", "server", "start", "--home", str(home), "--host", host, "--port", str(port),
            "--ui" if ui else "--no-ui", "--services" if services else "--no-services"]
    argv += ["--advertise", advertise] if advertise else []
    env = {**os.environ}
    if database:
        env[DATABASE_ENV] = database  # in the environment, not on a command line others can read
    if redis:
        env[REDIS_ENV] = redis
    log_path = home / "server-command.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    # A long-lived caller (a service that started it) reaps it once it stops, so `evalq server
    # stop` sees it gone; a command that returns leaves it to init.
    threading.Thread(target=process.wait, name="evalq-server-reaper", daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = running_server(home)
        if record is not None and record.pid == process.pid:
            return record
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise InputError(log_path, f"the server did not start: {tail[0]}")
        time.sleep(0.25)
    process.terminate()
    raise InputError(log_path, f"the server was not ready within {timeout:.0f} s")
