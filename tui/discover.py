"""Which Prefect API evaltui watches: the configured one, else the local server `evalq` runs.

`PREFECT_API_URL` (environment or Prefect profile) wins. Without it, a command such as
`evalq demo --keep` or `evalq campaign run` may have an embedded server up: it records
`{"api_url": ..., "pid": ...}` in `<home>/server.json` (home `./.evalq` by default), and
that server is used while its process lives and `/health` answers. Else the user's
`evalq server`, if it is up. Otherwise evaltui says that no API is configured and how to set one.
"""

from __future__ import annotations

import os
from pathlib import Path

from flows.runtime.server_record import SERVER_FILE, live_record

DEFAULT_HOME = Path(".evalq")


def configured_api_url() -> str | None:
    """`PREFECT_API_URL` from the environment or the active Prefect profile, if set."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or None


def local_server_url(home: Path | str = DEFAULT_HOME) -> str | None:
    """The API of the embedded server recorded in `<home>/server.json`, if it is up."""
    record = live_record(Path(home))
    return record.api_url if record else None


def find_api_url(home: Path | str = DEFAULT_HOME) -> str | None:
    """The configured API, else a running local `evalq` command's server, else `evalq server`'s, else None."""
    from flows.runtime.user_server import server_home

    return configured_api_url() or local_server_url(home) or local_server_url(server_home())


def no_api_message(home: Path | str = DEFAULT_HOME) -> str:
    return (
        "No Prefect API configured: set PREFECT_API_URL (e.g. PREFECT_API_URL=http://127.0.0.1:4200/api evaltui), "
        "or start one with `evalq server start --detach` (or `evalq demo --keep`); "
        f"no running evalq server in {Path(home) / SERVER_FILE}"
    )
