"""The local runtime: a Prefect server, the local work pool and a warm runner.

`evalq demo` and `evalq campaign run` (without PREFECT_API_URL) use it. The server is the
one the rule finds (`discovery.py`): the user's `evalq server` when one is up (nothing to start
or stop), else an embedded one on this folder's database (`folder_server.py`: `.evalq/` by
default) that stops with the context manager.
The runner is supervised (`flows/runtime/supervisor.py`): restarted when it dies, under a new
name (the dead one's worker row deleted, so its runs read as held by nobody alive); after five
deaths in ten minutes `failure` says why, and the campaign stops with that line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from flows.naming import EPISODE_ENTRYPOINT, LOCAL_WORK_POOL
from flows.runtime.api import use_api
from flows.runtime.discovery import configured_api, user_server
from flows.runtime.embedded_server import EmbeddedServer
from flows.runtime.folder_server import DEFAULT_HOME, FolderLock, server_home, take_over
from flows.runtime.host import die_with_parent, free_port, port_is_free
from flows.runtime.provisioning import prepare_api
from flows.runtime.server_record import SERVER_FILE, ServerRecord
from flows.runtime.supervisor import Supervisor
from flows.runtime.zombies import HEARTBEAT_SECONDS
from generate.jsonio import write_atomic

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
    name = name or local_worker_name()
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


def local_worker_name(start: int = 0) -> str:
    """This process's local worker's name; a restart gets a new one (its runs are told apart)."""
    return f"evalq-local-{os.getpid()}" + (f"-{start}" if start else "")


def forget_local_worker(api_url: str, work_pool: str, name: str) -> None:
    """Delete a dead worker's row, so its runs read as held by nobody alive at once."""
    from prefect.client.orchestration import PrefectClient

    from flows.runtime.liveness import forget_worker

    async def forget() -> None:
        async with PrefectClient(api=api_url) as client:
            await forget_worker(client, work_pool, name)

    asyncio.run(forget())


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def flush_prefect_clients(timeout: float = 5.0) -> None:
    """Send this process's buffered logs and events, then close their connections."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


class LocalStack:
    """Embedded server (or the one at PREFECT_API_URL), work pool, deployments and a worker."""

    def __init__(self, home: Path = DEFAULT_HOME, worker_limit: int = 8, ui: bool = True, worker_kind: str = "runner",
                 server_env: dict[str, str] | None = None, report: Callable[[str], None] = warn):
        self.home = Path(home).resolve()
        self.worker_limit = worker_limit
        self.ui = ui
        self.worker_kind = worker_kind
        self.server_env = server_env
        self.server: EmbeddedServer | None = None
        self.supervisor: Supervisor | None = None
        self.report = report
        """Told one line each time the worker is restarted."""
        self.api_url = configured.api_url if (configured := configured_api()) else None
        self.shared_server = False
        """True when the user's `evalq server` serves this stack."""
        self.pointed = False
        """True while this process's PREFECT_API_URL points at the server this stack found or started."""
        self._settings = contextlib.ExitStack()
        self._folder = FolderLock(self.home)
        """Held from choosing the folder's server until its record is written."""

    @property
    def worker(self) -> subprocess.Popen | None:
        """The worker process running now."""
        return self.supervisor.process if self.supervisor else None

    @property
    def failure(self) -> str | None:
        """Why the worker is left dead (one line), once it could not be kept alive."""
        return self.supervisor.failure if self.supervisor else None

    @property
    def ui_url(self) -> str:
        return self.server.ui_url if self.server else (self.api_url or "").removesuffix("/api")

    def start(self) -> "LocalStack":
        if self.api_url is None and not self.server_env and (found := user_server()) is not None:
            self.shared_server = True
            self.use(found.api_url)
        if self.api_url is None:
            self._folder.acquire()
            port = take_over(self.home)  # a reader's server: serve on its port, the reader keeps its URL
            if port is None or not port_is_free(port):
                port = PREFERRED_PORT if port_is_free(PREFERRED_PORT) else free_port()
            self.server = EmbeddedServer(server_home(self.home), port=port, ui=self.ui, extra_env=self.server_env).launch()
        if self.server is not None:
            import flows.runtime.deployments  # noqa: F401  this process's import of Prefect (~3 s) overlaps the server's start
        if self.worker_kind == "runner" and (self.shared_server or self.server is not None):
            # Its start overlaps the server's and the pools' and deployments' (it waits for its pool);
            # launched after this process's import, so the server's (the longest) has a core to itself.
            self._start_worker(wait=STARTUP_WAIT_SECONDS)
        if self.server is not None:
            self.server.wait_ready(STARTUP_WAIT_SECONDS)
            self.api_url = self.server.api_url
            record = ServerRecord(api_url=self.api_url, pid=self.server.process.pid)
            write_atomic(self.home / SERVER_FILE, record.model_dump_json() + "\n")
            self._folder.release()
            self.use(self.api_url)
        asyncio.run(prepare_api(kind=self.worker_kind))
        if self.supervisor is None:
            self._start_worker()
        return self

    def _start_worker(self, wait: float = 0.0) -> None:
        api_url = self.api_url or self.server.api_url
        log = self.home / "worker.log"
        self.supervisor = Supervisor(
            f"the local {'runner' if self.worker_kind == 'runner' else 'worker'}",
            lambda n: start_worker(api_url, self.worker_limit, log, kind=self.worker_kind, wait=wait, name=local_worker_name(n)),
            log, on_death=lambda n: forget_local_worker(api_url, LOCAL_WORK_POOL, local_worker_name(n)), report=self.report,
        ).start()

    def stop_worker(self) -> None:
        """End the worker (and its supervision): nothing takes the pool's runs any more."""
        if self.supervisor is not None:
            self.supervisor.stop(grace=10)
            self.supervisor = None

    def use(self, api_url: str) -> None:
        """Point this process and its children at `api_url` until `stop()`."""
        self.api_url = api_url
        self.pointed = True
        os.environ["PREFECT_API_URL"] = api_url  # for subprocesses
        # Prefect read its settings at import: point this process at the server too.
        self._settings.enter_context(use_api(api_url))

    def stop(self) -> None:
        self._folder.release()
        if self.pointed:
            flush_prefect_clients()  # while the server still listens: nothing is lost, nothing complains
        self.stop_worker()
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
