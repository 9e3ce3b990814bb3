"""Session fixtures: one real Prefect server and one local worker for the whole session.

`--backend sqlite` (default) keeps each server's database in its home; `--backend postgres`
gives each server a database of its own in one throwaway PostgreSQL cluster (flows/runtime/postgres.py).
CI runs the tests marked `backends` a second time on PostgreSQL, and the main pass in two
pytest-xdist workers (`-n 2 --dist loadgroup`), each with its own session server and worker.
`--scaled` runs the tests marked `scaled` (their own Prefect: replicas behind haproxy), skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "challenge"

os.environ.setdefault("NO_GCE_CHECK", "true")
# No test may find (and use, or stop) a user's `evalq server`; tests that want one start their own.
os.environ["EVALQ_SERVER_HOME"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"evalq-tests-no-server-{os.getpid()}")
# Nor write jobs' output, environments or a queue worker's record into the user's ~/.evalq/queue.
os.environ["EVALQ_QUEUE_HOME"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"evalq-tests-queue-{os.getpid()}")
DATABASE_URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
# A background job of a non-interactive shell (`pytest ... &`, as .ci/run's PostgreSQL pass) starts
# with SIGINT ignored, and so would every process the tests start: the Ctrl-C tests need it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser):
    parser.addoption("--backend", choices=("sqlite", "postgres"), default="sqlite",
                     help="database of the tests' Prefect servers (postgres: a throwaway cluster, Debian's packages)")
    parser.addoption("--scaled", action="store_true",
                     help="run the tests marked `scaled`: API replicas behind haproxy on PostgreSQL and Redis (CI's own pass)")


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the groups
def pytest_collection_modifyitems(config, items):
    """xdist groups: a module's tests run in one worker (its module fixtures start once), and the
    tests marked `slurm` in one worker too, one at a time: they share the one SLURM cluster (one
    takes its node down)."""
    for item in items:
        group = "slurm" if item.get_closest_marker("slurm") else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def new_database(request):
    """`new_database()` -> the environment of a Prefect server with an empty database of its own
    ({} on SQLite: the server's home holds it). A restarted server keeps its environment, hence its data."""
    if request.config.getoption("--backend") == "sqlite":
        yield dict
        return
    import itertools

    from flows.runtime.postgres import LocalPostgres

    numbers = itertools.count(1)
    with LocalPostgres() as cluster:
        yield lambda: {DATABASE_URL: cluster.create_database(f"prefect_{next(numbers)}")}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory, new_database):
    """A real Prefect server on loopback; this process and its children talk to it."""
    from flows.runtime.api import use_api
    from flows.runtime.embedded_server import EmbeddedServer

    server = EmbeddedServer(tmp_path_factory.mktemp("prefect-home"), ui=False, extra_env=new_database())
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

    from flows.runtime.provisioning import prepare_api
    from flows.runtime.local_stack import start_worker
    from flows.runtime.process_groups import terminate_group

    asyncio.run(prepare_api())
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(prefect_server.api_url, limit=12, log_path=log)
    try:
        yield worker
    finally:
        terminate_group(worker)


@pytest.fixture
def anyio_backend():
    """`@pytest.mark.anyio` tests run on asyncio only: Prefect's client needs it (not trio, which
    anyio's default would add when it is installed)."""
    return "asyncio"
