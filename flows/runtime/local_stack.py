"""The local runtime: a Prefect server, the local work pool and a warm runner.

`evalq demo` and `evalq campaign run` (without PREFECT_API_URL) use it. The server is the
user's `evalq server` when one is up (nothing to start or stop), else an embedded one that
lives in a project-local folder (`.evalq/` by default) and stops with the context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from flows.naming import EPISODE_ENTRYPOINT, LOCAL_WORK_POOL
from flows.runtime.api import use_api
from flows.runtime.embedded_server import EmbeddedServer
from flows.runtime.host import die_with_parent, free_port, port_is_free
from flows.runtime.process_groups import terminate_group
from flows.runtime.provisioning import prepare_api
from flows.runtime.server_record import SERVER_FILE, ServerRecord
from flows.runtime.zombies import HEARTBEAT_SECONDS
from generate.jsonio import write_atomic

DEFAULT_HOME = Path(".evalq")
PREFERRED_PORT = 4200
STARTUP_WAIT_SECONDS = 120.0
"""How long an embedded server (and the runner started beside it) may take to come up."""


def worker_environment(api_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }


def start_worker(api_url: str, limit: int, log_path: Path, work_pool: str = LOCAL_WORK_POOL, kind: str = "runner",
                 wait: float = 0.0, name: str | None = None):
    """The local pool's worker, running up to `limit` flow runs at once: `evalq runner` (a
    warm runner), or for `kind="prefork"` Prefect's worker with a forked process per run.
    With `wait`, a runner imports the episode flow and waits up to `wait` s for the API and
    its pool, so it can start beside its server. `name`: one per worker of a process."""
    name = name or f"evalq-local-{os.getpid()}"
    if kind == "prefork":
        from flows.naming import PREFORK_POOL_TYPE as WORK_POOL_TYPE

        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", work_pool, "--type", WORK_POOL_TYPE,
                "--limit", str(limit), "--name", name]
    else:
        argv = [sys.executable, "-m", "flows.cli", "runner", "--pool", work_pool, "--slots", str(limit), "--name", name]
        if wait:
            argv += ["--wait", str(wait), "--preload", EPISODE_ENTRYPOINT]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, env=worker_environment(api_url), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
        )


def flush_prefect_clients(timeout: float = 5.0) -> None:
    """Send this process's buffered logs and events, then close their connections."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


class LocalStack:
    """Embedded server (or the one at PREFECT_API_URL), work pool, deployments and a worker."""

    def __init__(self, home: Path = DEFAULT_HOME, worker_limit: int = 8, ui: bool = True, worker_kind: str = "runner",
                 server_env: dict[str, str] | None = None):
        self.home = Path(home).resolve()
        self.worker_limit = worker_limit
        self.ui = ui
        self.worker_kind = worker_kind
        self.server_env = server_env
        self.server: EmbeddedServer | None = None
        self.worker: subprocess.Popen | None = None
        self.api_url = os.environ.get("PREFECT_API_URL")
        self.shared_server = False
        """True when the user's `evalq server` serves this stack."""
        self.pointed = False
        """True while this process's PREFECT_API_URL points at the server this stack found or started."""
        self._settings = contextlib.ExitStack()

    @property
    def ui_url(self) -> str:
        return self.server.ui_url if self.server else (self.api_url or "").removesuffix("/api")

    def start(self) -> "LocalStack":
        from flows.runtime.user_server import running_server

        if self.api_url is None and not self.server_env and (record := running_server()) is not None:
            self.shared_server = True
            self.use(record.api_url)
        if self.api_url is None:
            port = PREFERRED_PORT if port_is_free(PREFERRED_PORT) else free_port()
            self.server = EmbeddedServer(self.home / "prefect", port=port, ui=self.ui, extra_env=self.server_env).launch()
        if self.server is not None:
            import flows.runtime.deployments  # noqa: F401  this process's import of Prefect (~3 s) overlaps the server's start
        if self.worker_kind == "runner" and (self.shared_server or self.server is not None):
            # Its start overlaps the server's and the pools' and deployments' (it waits for its pool);
            # launched after this process's import, so the server's (the longest) has a core to itself.
            self.worker = self._start_worker(wait=STARTUP_WAIT_SECONDS)
        if self.server is not None:
            self.server.wait_ready(STARTUP_WAIT_SECONDS)
            self.api_url = self.server.api_url
            record = ServerRecord(api_url=self.api_url, pid=self.server.process.pid)
            write_atomic(self.home / SERVER_FILE, record.model_dump_json() + "\n")
            self.use(self.api_url)
        asyncio.run(prepare_api(kind=self.worker_kind))
        if self.worker is None:
            self.worker = self._start_worker()
        return self

    def _start_worker(self, wait: float = 0.0) -> subprocess.Popen:
        api_url = self.api_url or self.server.api_url
        return start_worker(api_url, self.worker_limit, self.home / "worker.log", kind=self.worker_kind, wait=wait)

    def use(self, api_url: str) -> None:
        """Point this process and its children at `api_url` until `stop()`."""
        self.api_url = api_url
        self.pointed = True
        os.environ["PREFECT_API_URL"] = api_url  # for subprocesses
        # Prefect read its settings at import: point this process at the server too.
        self._settings.enter_context(use_api(api_url))

    def stop(self) -> None:
        if self.pointed:
            flush_prefect_clients()  # while the server still listens: nothing is lost, nothing complains
        if self.worker is not None:
            terminate_group(self.worker, grace=10)
            self.worker = None
        if self.server is not None:
            (self.home / SERVER_FILE).unlink(missing_ok=True)
            self.server.stop(timeout=5)
            self.server = None
        if self.pointed:
            os.environ.pop("PREFECT_API_URL", None)
            self.pointed = False
        self._settings.close()

    def __enter__(self) -> "LocalStack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
