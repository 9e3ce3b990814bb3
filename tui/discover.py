"""Which Prefect API evaltui watches: the configured one, else the local server `evalq` runs.

`PREFECT_API_URL` (environment or Prefect profile) wins. Without it, a command such as
`evalq demo --keep` or `evalq campaign run` may have an embedded server up: it records
`{"api_url": ..., "pid": ...}` in `<home>/server.json` (home `./.evalq` by default), and
that server is used while its process lives and `/health` answers. Otherwise evaltui says
that no API is configured and how to set one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from flows.server import SERVER_FILE, ServerRecord

DEFAULT_HOME = Path(".evalq")


def configured_api_url() -> str | None:
    """`PREFECT_API_URL` from the environment or the active Prefect profile, if set."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def api_answers(api_url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def local_server_url(home: Path | str = DEFAULT_HOME) -> str | None:
    """The API of the embedded server recorded in `<home>/server.json`, if it is up."""
    try:
        record = ServerRecord.model_validate(json.loads((Path(home) / SERVER_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None
    if record.pid <= 0 or not process_alive(record.pid) or not api_answers(record.api_url):
        return None
    return record.api_url


def find_api_url(home: Path | str = DEFAULT_HOME) -> str | None:
    """The configured API, else a running local `evalq` server's, else None."""
    return configured_api_url() or local_server_url(home)


def no_api_message(home: Path | str = DEFAULT_HOME) -> str:
    return (
        "No Prefect API configured: set PREFECT_API_URL (e.g. PREFECT_API_URL=http://127.0.0.1:4200/api evaltui), "
        f"or start a local one with `evalq demo --keep`; no running evalq server in {Path(home) / SERVER_FILE}"
    )
