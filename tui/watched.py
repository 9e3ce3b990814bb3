"""The Prefect server evaltui watches, found by evalq's one rule (`flows/runtime/discovery.py`):
`--api`, PREFECT_API_URL, the user's `evalq server`, else this folder's embedded database: the
server a command serves it with, else one evaltui serves it with while it watches (and serves
again, on the same port, once a campaign that took the database over has ended)."""

from __future__ import annotations

import os
from pathlib import Path

from flows.runtime import discovery
from flows.runtime.folder_server import FolderReader


class WatchedServer:
    """Finds the server (each tick while there is none), and keeps the folder's served."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.reader = FolderReader(self.home)
        self.found: discovery.Found | None = None

    @staticmethod
    def configured() -> bool:
        """Whether `--api` or PREFECT_API_URL names the server (nothing to look for)."""
        return discovery.configured_api() is not None

    def find(self) -> discovery.Found | None:
        """The server by the rule (this process's Prefect clients then talk to it), or None."""
        found = discovery.find_prefect(None, self.home)
        if found is None and (url := self.reader.open()) is not None:
            found = discovery.Found(url, discovery.Source.FOLDER, home=self.home, started=self.reader.started)
        if found is not None:
            os.environ["PREFECT_API_URL"] = found.api_url  # every Prefect client of this process follows it
            self.found = found
        return found

    def missing(self) -> str:
        """The one line that says none was found, and the fix."""
        return str(discovery.no_server(self.home))

    def unreachable(self) -> None:
        """After a failed read: serve the folder's database again if it was the one watched."""
        if self.found is not None and self.found.source is discovery.Source.FOLDER:
            self.reader.open()

    def close(self) -> None:
        self.reader.close()
