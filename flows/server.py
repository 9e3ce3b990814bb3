"""An embedded Prefect server on SQLite, for the demo, local campaigns and the tests.

Leases are kept on disk (`PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE`) so that a
restarted server neither forgets who holds a policy-server slot nor leaks one.

A fresh SQLite database spends most of a server's start in migrations (15-20 s here), so
a new home starts from a copy of a migrated database, with Prefect's block types registered, that
is made once per user and Prefect version (`migrated_database()`, under `~/.cache/evalq/`); a
server on such a copy skips both steps at start (about 3 s here). What remains is Prefect's own
import and start-up, 7-10 s on this box: `evalq server start` keeps one server up for many
commands.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx
from pydantic import BaseModel

from flows.process_groups import terminate_group

FILESYSTEM_LEASES = "prefect.server.concurrency.lease_storage.filesystem"


SERVER_FILE = "server.json"


class ServerRecord(BaseModel):
    """`<home>/server.json`: the server a running `evalq` command started (evaltui and campaigns find it)."""

    api_url: str
    pid: int
    database: str | None = None
    """`sqlite`, or the PostgreSQL URL without its password (`evalq server` only)."""
    ui_url: str | None = None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_answers(url: str, seconds: float, interval: float = 0.25, dead: Callable[[], bool] = lambda: False) -> bool:
    """Poll `url` until it answers 200 (True), `seconds` pass or `dead()` says stop waiting (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not dead():
        if answers(url):
            return True
        time.sleep(interval)
    return False


def api_answers(api_url: str, timeout: float = 2.0) -> bool:
    return answers(f"{api_url.rstrip('/')}/health", timeout)


def read_record(home: Path) -> ServerRecord | None:
    """`<home>/server.json`, or None if it is missing or unreadable."""
    from pydantic import ValidationError

    try:
        return ServerRecord.model_validate_json((Path(home) / SERVER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError):
        return None


def live_record(home: Path) -> ServerRecord | None:
    """`<home>/server.json` if the process it names lives and its API answers."""
    record = read_record(home)
    if record is None or record.pid <= 0 or not process_alive(record.pid) or not api_answers(record.api_url):
        return None
    return record


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies (Linux), so nothing is left behind."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def server_environment(home: Path) -> dict[str, str]:
    """Settings shared by the embedded server and the processes that talk to it."""
    return {
        "PREFECT_HOME": str(home),
        # One host's disk unless the user names a store shared by replicas (prefect_redis.lease_storage).
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": os.environ.get("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE") or FILESYSTEM_LEASES,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        # Live log tail over the websocket (evaltui); the API's log backfill works either way.
        "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
        "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
    }


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evalq"


PREPARE_DATABASE = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def prepare():
    db = provide_database_interface()
    await db.create_db()
    async with await db.session() as session:
        await run_block_auto_registration(session=session)
        await session.commit()

asyncio.run(prepare())
"""
"""Migrate a fresh database and register Prefect's block types: what a server does at its first start."""

SEEDED_MARKER = "prefect.db.seeded"
"""Beside a home's database made from the template: its server may skip migrations and block registration."""


def prefect_version() -> str:
    """The installed Prefect's version, without importing Prefect (1.5 s: the server's own start
    waits for the caller's)."""
    from importlib.metadata import version

    return version("prefect")


def migrated_database() -> Path:
    """A SQLite database with this Prefect version's migrations applied and block types registered
    (made on first use)."""
    template = cache_dir() / f"prefect-{prefect_version()}-blocks.db"
    if template.exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        env = {**os.environ, "PREFECT_HOME": scratch}
        env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        subprocess.run(
            [sys.executable, "-c", PREPARE_DATABASE],
            env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.replace(Path(scratch) / "prefect.db", template)  # atomic: concurrent makers both succeed
    return template


def seed_database(home: Path) -> bool:
    """Give a new server home a prepared database; True if the home's database came from one."""
    database, marker = home / "prefect.db", home / SEEDED_MARKER
    if database.exists():
        return marker.exists() and marker.read_text(encoding="utf-8").strip() == prefect_version()
    try:
        template = migrated_database()
    except (OSError, subprocess.CalledProcessError):
        return False  # the server migrates a fresh database itself, only slower
    partial = database.with_suffix(".db.partial")
    shutil.copyfile(template, partial)
    os.replace(partial, database)
    marker.write_text(prefect_version() + "\n", encoding="utf-8")
    return True


SKIP_DATABASE_PREPARATION = {
    "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    # Else the server imports every collection (ours pull in prefect-kubernetes): 1.8 s of its start.
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}


class EmbeddedServer:
    """A `prefect server start` subprocess on loopback with its own home folder."""

    def __init__(self, home: Path, port: int | None = None, ui: bool = True, extra_env: dict[str, str] | None = None,
                 host: str = "127.0.0.1"):
        self.home = Path(home).resolve()
        self.host = host
        self.port = port or free_port()
        self.ui = ui
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None

    @property
    def database_url(self) -> str | None:
        """The database given in `extra_env` or the environment (PostgreSQL), or None for the home's SQLite file."""
        for source in (self.extra_env, os.environ):
            for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
                if source.get(name):
                    return source[name]
        return None

    @property
    def ui_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def start(self, timeout: float = 120.0) -> "EmbeddedServer":
        """Start the server and wait until its health endpoint answers."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> "EmbeddedServer":
        """Start the server process without waiting for it (`wait_ready` does)."""
        self.home.mkdir(parents=True, exist_ok=True)
        prepared = self.database_url is None and seed_database(self.home)
        env = {**os.environ, **server_environment(self.home), "PREFECT_SERVER_UI_ENABLED": str(self.ui).lower(),
               **(SKIP_DATABASE_PREPARATION if prepared else {}), **self.extra_env}
        env.pop("PREFECT_API_URL", None)
        argv = [sys.executable, "-m", "flows.prefect_serve", "server", "start", "--host", self.host, "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        return self

    def wait_ready(self, timeout: float) -> None:
        exited = lambda: self.process is not None and self.process.poll() is not None  # noqa: E731
        if wait_until_answers(f"{self.api_url}/health", timeout, dead=exited):
            return
        if exited():
            raise RuntimeError(f"Prefect server exited with code {self.process.returncode}; see {self.log_path}")
        self.stop()
        raise RuntimeError(f"Prefect server did not become ready in {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and its children, also those of a server
        that already died."""
        if self.process is None:
            return
        terminate_group(self.process, timeout)
        self.process = None

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
