"""An embedded Prefect server (`prefect server start` as a child process), for the demo, local
campaigns, the user's `evalq server` and the tests.

Leases are kept on disk (`PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE`) so that a restarted
server neither forgets who holds a policy-server slot nor leaks one. A new home's SQLite
database is a copy of a migrated one (`database_template.py`); what remains is Prefect's own
import and start-up, 7-10 s on this box: `evalq server start` keeps one server up for many
commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.runtime.api import wait_until_answers
from flows.runtime.database_template import SKIP_DATABASE_PREPARATION, seed_database
from flows.runtime.host import die_with_parent, free_port
from flows.runtime.process_groups import terminate_group

FILESYSTEM_LEASES = "prefect.server.concurrency.lease_storage.filesystem"


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


class EmbeddedServer:
    """A `prefect server start` subprocess on loopback with its own home folder."""

    def __init__(self, home: Path, port: int | None = None, ui: bool = True, extra_env: dict[str, str] | None = None,
                 host: str = "127.0.0.1", services: bool = True):
        self.home = Path(home).resolve()
        self.services = services
        """False: an API replica (`--no-services`), its background services run apart (`flows/runtime/scaled.py`)."""
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
        argv = [sys.executable, "-m", "flows.runtime.prefect_serve", "server", "start", "--host", self.host, "--port", str(self.port)]
        if not self.services:
            argv.append("--no-services")
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
