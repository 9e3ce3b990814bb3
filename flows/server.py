"""An embedded Prefect server on SQLite, for the demo, local campaigns and the tests.

Leases are kept on disk (`PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE`) so that a
restarted server neither forgets who holds a policy-server slot nor leaks one.

A fresh SQLite database spends most of a server's start in migrations (15-20 s here), so
a new home starts from a copy of a migrated database that is made once per user and
Prefect version (`migrated_database()`, under `~/.cache/evalq/`).
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

import httpx
from pydantic import BaseModel

FILESYSTEM_LEASES = "prefect.server.concurrency.lease_storage.filesystem"


SERVER_FILE = "server.json"


class ServerRecord(BaseModel):
    """`<home>/server.json`: the embedded server a running `evalq` command started (evaltui finds it)."""

    api_url: str
    pid: int


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
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": FILESYSTEM_LEASES,
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


def migrated_database() -> Path:
    """A SQLite database with all of this Prefect version's migrations applied (made on first use)."""
    import prefect

    template = cache_dir() / f"prefect-{prefect.__version__}.db"
    if template.exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        env = {**os.environ, "PREFECT_HOME": scratch}
        env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.replace(Path(scratch) / "prefect.db", template)  # atomic: concurrent makers both succeed
    return template


def seed_database(home: Path) -> None:
    """Give a new server home a migrated database, so its first start skips the migrations."""
    database = home / "prefect.db"
    if database.exists():
        return
    try:
        template = migrated_database()
    except (OSError, subprocess.CalledProcessError):
        return  # the server migrates a fresh database itself, only slower
    partial = database.with_suffix(".db.partial")
    shutil.copyfile(template, partial)
    os.replace(partial, database)


class EmbeddedServer:
    """A `prefect server start` subprocess on loopback with its own home folder."""

    def __init__(self, home: Path, port: int | None = None, ui: bool = True, extra_env: dict[str, str] | None = None):
        self.home = Path(home).resolve()
        self.port = port or free_port()
        self.ui = ui
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def start(self, timeout: float = 120.0) -> "EmbeddedServer":
        """Start the server and wait until its health endpoint answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        seed_database(self.home)
        env = {**os.environ, **server_environment(self.home), "PREFECT_SERVER_UI_ENABLED": str(self.ui).lower(),
               **self.extra_env}
        env.pop("PREFECT_API_URL", None)
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Prefect server exited with code {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"Prefect server did not become ready in {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and its children."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
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


def terminate_group(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM a process started with `start_new_session=True` and its group; SIGKILL if it lingers."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
