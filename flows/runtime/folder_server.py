"""This folder's embedded database: where `evalq campaign run` and `evalq demo` keep their runs
when no other Prefect server is found (`<home>/prefect/prefect.db`; home `./.evalq` by default,
`--home`), and which server serves it.

One server at a time serves a folder's database: `<home>/server.json` names it while it is up,
and `<home>/server.lock` (an flock) is held while one is chosen and started, so two commands
never start two. A command that runs a campaign there (the local stack) starts its own and
refuses a folder that another such command serves. A command that only reads (`evalq campaign
report`, evaltui, ...) uses the server that is up, else starts one for its duration
(`FolderReader`, recorded with `reader: true`); a campaign of that folder takes the database
over from such a reader: it stops the reader's server and serves on the same port, so the
reader keeps its URL.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from urllib.parse import urlsplit

from flows.runtime.embedded_server import EmbeddedServer
from flows.runtime.host import free_port, port_is_free
from flows.runtime.process_groups import terminate
from flows.runtime.server_record import (
    SERVER_FILE,
    ServerRecord,
    live_record,
    read_record,
)
from generate.errors import InputError
from generate.jsonio import write_atomic

DEFAULT_HOME = Path(".evalq")
LOCK_FILE = "server.lock"
READER_STARTUP_SECONDS = 120.0


def server_home(home: Path | str) -> Path:
    """Where the folder's Prefect server keeps its database (its PREFECT_HOME)."""
    return Path(home).resolve() / "prefect"


def has_database(home: Path | str) -> bool:
    """Whether a campaign or the demo has run here: the folder's SQLite database exists."""
    return (server_home(home) / "prefect.db").exists()


class FolderLock:
    """`<home>/server.lock`, held while a command decides who serves the folder's database and
    starts that server (until its `server.json` is written)."""

    def __init__(self, home: Path | str):
        self.home = Path(home).resolve()
        self._handle = None

    def acquire(self) -> "FolderLock":
        if self._handle is None:
            self.home.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.home / LOCK_FILE, "a")
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def take_over(home: Path | str) -> int | None:
    """Before a campaign serves the folder's database (under its `FolderLock`): stop a reader's
    server and return its port (to serve on); refuse a folder another campaign command serves."""
    home = Path(home).resolve()
    record = live_record(home)
    if record is None:
        return None
    if not record.reader:
        raise InputError(home / SERVER_FILE, f"another evalq command serves this folder's database at {record.api_url} "
                                             f"(server pid {record.pid}): run again once it ends, or use another --home")
    terminate(record.pid, grace=10)
    return urlsplit(record.api_url).port


class FolderReader:
    """The server a reading command uses for the folder's database: the one up, else one of its
    own until `close()` (reopened on the same port by `open()` after a campaign took it over
    and ended)."""

    def __init__(self, home: Path | str = DEFAULT_HOME):
        self.home = Path(home).resolve()
        self.server: EmbeddedServer | None = None
        self.port: int | None = None

    @property
    def started(self) -> bool:
        """Whether this reader's own server serves the database now."""
        return self.server is not None and self.server.process is not None and self.server.process.poll() is None

    def open(self) -> str | None:
        """The API URL of the server serving the folder's database (started if none is up);
        None when the folder has no database."""
        if self.started:
            return self.server.api_url
        with FolderLock(self.home):
            if (record := live_record(self.home)) is not None:
                self.port = urlsplit(record.api_url).port  # to serve on once that command's server is gone
                return record.api_url
            if not has_database(self.home):
                return None
            self._stop_own()
            port = self.port if self.port and port_is_free(self.port) else free_port()
            self.server = EmbeddedServer(server_home(self.home), port=port, ui=False).start(READER_STARTUP_SECONDS)
            self.port = port
            record = ServerRecord(api_url=self.server.api_url, pid=self.server.process.pid, reader=True)
            write_atomic(self.home / SERVER_FILE, record.model_dump_json() + "\n")
            return self.server.api_url

    def close(self) -> None:
        if self.server is None:
            return
        with FolderLock(self.home):
            self._stop_own()

    def _stop_own(self) -> None:
        if self.server is None:
            return
        record = read_record(self.home)
        if record is not None and self.server.process is not None and record.pid == self.server.process.pid:
            (self.home / SERVER_FILE).unlink(missing_ok=True)
        self.server.stop(timeout=5)
        self.server = None
