"""`python -m flows.runtime.prefect_serve server start ...`: Prefect's own server command, with its SQLite
transactions taking the write lock when they begin.

Prefect (3.8.8, and 3.9.1 still) opens SQLite transactions DEFERRED unless a route asks for a row lock. Two requests
that each read, then write (a flow-run creation, a slot lease, a state proposal) collide: the
second one's read-to-write upgrade fails with SQLITE_BUSY at once (SQLite's busy timeout does
not apply to an upgrade, which could deadlock), the API answers 503, and Prefect's client
retries 2 s later. On the campaign bench two thirds of the creations and leases collided, and
the 2 s retries were the median slot handoff. `BEGIN IMMEDIATE` takes the write lock up front,
so a colliding request waits its turn under the busy timeout instead (docs/architecture.md).
Only the server process is changed; PostgreSQL servers run Prefect's command as it is.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator


def begin_sqlite_transactions_immediately() -> None:
    """Make every SQLite transaction Prefect's server opens `BEGIN IMMEDIATE`."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    deferred = AioSqliteConfiguration.begin_transaction

    @contextlib.asynccontextmanager
    async def begin_transaction(self, session, with_for_update: bool = False) -> AsyncIterator:
        async with deferred(self, session, with_for_update=True) as transaction:
            yield transaction

    AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]


def main() -> None:
    begin_sqlite_transactions_immediately()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
