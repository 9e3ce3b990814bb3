"""Session fixtures: one real Prefect server (SQLite) and one local worker for the whole session."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "challenge"

os.environ.setdefault("NO_GCE_CHECK", "true")
# No test may find (and use, or stop) a user's `evalq server`; tests that want one start their own.
os.environ["EVALQ_SERVER_HOME"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"evalq-tests-no-server-{os.getpid()}")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server on loopback; this process and its children talk to it."""
    from flows.local import use_api
    from flows.server import EmbeddedServer

    server = EmbeddedServer(tmp_path_factory.mktemp("prefect-home"), ui=False)
    server.start()
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    with contextlib.ExitStack() as stack:
        # Prefect read its settings when first imported: point this process at the server too.
        stack.enter_context(use_api(server.api_url))
        try:
            yield server
        finally:
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)  # send the last logs while the server still listens
            server.stop()
            if saved is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = saved


@pytest.fixture(scope="session")
def episode_worker(prefect_server, tmp_path_factory):
    """The `evalq-local` process work pool, the `local` deployments and a running worker."""
    import asyncio

    from flows.local import prepare_api, start_worker
    from flows.server import terminate_group

    asyncio.run(prepare_api())
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(prefect_server.api_url, limit=12, log_path=log)
    try:
        yield worker
    finally:
        terminate_group(worker)
