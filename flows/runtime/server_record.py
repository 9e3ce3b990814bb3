"""`<home>/server.json`: the record of a Prefect server an evalq command started (the user's
`evalq server`, or an embedded one), by which other commands, runners and evaltui find it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from flows.runtime.api import api_answers
from flows.runtime.host import process_alive

SERVER_FILE = "server.json"


class ServerRecord(BaseModel):
    """`<home>/server.json`: the server a running `evalq` command started (evaltui and campaigns find it)."""

    api_url: str
    pid: int
    database: str | None = None
    """`sqlite`, or the PostgreSQL URL without its password (`evalq server` only)."""
    ui_url: str | None = None
    advertised_url: str | None = None
    """The API URL other nodes use (`evalq server start --host 0.0.0.0` or `--advertise`); None: `api_url`."""
    reader: bool = False
    """A server started on a folder's embedded database for a reading command's duration
    (`flows/runtime/folder_server.py`): a campaign of that folder takes the database over from it."""
    redis: str | None = None
    """The Redis of Prefect's messaging and leases, without its password (`--redis`)."""
    services: bool = True
    """False: an API replica, Prefect's background services run apart (`--no-services`)."""


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
