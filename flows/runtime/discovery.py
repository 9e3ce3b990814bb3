"""One rule for finding the Prefect server a command talks to (the README's "Which Prefect server").

1. `--api URL`, if given;
2. else `PREFECT_API_URL` (the environment, else the active Prefect profile);
3. else the user's `evalq server` (`user_server.py`), if it answers;
4. else this folder's embedded database (`folder_server.py`: `./.evalq`, `--home`): the server
   an evalq command serves it with now, else, for a command that reads campaigns, one started
   for the command's duration (`evalq campaign run` and `evalq demo` start their local stack
   there instead).

Every command says in one line which server it used (`Found.describe`); one that finds none
says so in one line with the fix. The commands that name a campaign also look in the folder's
database when the user's server (step 3) does not know it (`flows/cli/campaign.py`), so a
campaign run there stays in sight once another command has started the user's server.
Long-lived services that must have a server start the user's (`find_or_start_user_server`).
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from flows.runtime.api import check_api
from flows.runtime.folder_server import DEFAULT_HOME, FolderReader
from flows.runtime.server_record import live_record
from generate.errors import InputError

API_HELP = "Prefect API URL (default: PREFECT_API_URL, else your `evalq server`, else this folder's embedded database)"
START_HINT = "start one with `evalq server start --detach`"


class Source(str, enum.Enum):
    """Which step of the rule found the server."""

    OPTION = "--api"
    ENVIRONMENT = "PREFECT_API_URL"
    PROFILE = "PREFECT_API_URL of the Prefect profile"
    USER_SERVER = "your evalq server"
    FOLDER = "this folder's embedded database"


@dataclass(frozen=True)
class Found:
    """The Prefect server a command uses, and how it was found."""

    api_url: str
    source: Source
    shared_url: str | None = None
    """The URL other nodes use, when the server advertised one (`evalq server start --host 0.0.0.0`)."""
    home: Path | None = None
    """The folder, for `Source.FOLDER`."""
    started: bool = False
    """A server started on the folder's database for this command."""

    @property
    def for_other_nodes(self) -> str:
        """The URL to hand to runners on other nodes."""
        return self.shared_url or self.api_url

    @property
    def configured(self) -> bool:
        """Named by the user (`--api`, PREFECT_API_URL), not found by looking around."""
        return self.source in (Source.OPTION, Source.ENVIRONMENT, Source.PROFILE)

    def describe(self) -> str:
        where = self.source.value
        if self.source is Source.FOLDER:
            where += f" {self.home}" + (", served for this command" if self.started else "")
        elif self.started:
            where += ", started now; it stays up (`evalq server stop`)"
        if self.shared_url and self.shared_url != self.api_url:
            where += f"; other nodes: {self.shared_url}"
        return f"{self.api_url} ({where})"

    def announce(self) -> None:
        """The one line (on stderr) that says which server the command used."""
        announce(self)


def announce(*servers: Found) -> None:
    """The one line (on stderr) that says which server(s) the command used."""
    label = "Prefect server" if len(servers) == 1 else "Prefect servers"
    print(f"{label}: " + " and ".join(found.describe() for found in servers), file=sys.stderr, flush=True)


def configured_api(api: str | None = None) -> Found | None:
    """Steps 1 and 2: `--api`, else PREFECT_API_URL from the environment or the Prefect profile."""
    if api:
        return Found(api, Source.OPTION)
    if os.environ.get("PREFECT_API_URL"):
        return Found(os.environ["PREFECT_API_URL"], Source.ENVIRONMENT)
    if profile_url := profile_api_url():
        return Found(profile_url, Source.PROFILE)
    return None


def profile_api_url() -> str | None:
    """PREFECT_API_URL of Prefect's settings files (the active profile, `prefect.toml`, `.env`),
    asked of Prefect only when such a file exists: its import costs ~1.5 s, which a command that
    starts a server overlaps with that server's start."""
    prefect_home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    files = [Path(os.environ.get("PREFECT_PROFILES_PATH") or prefect_home / "profiles.toml"), Path("prefect.toml"), Path(".env")]
    if not any(path.exists() for path in files):
        return None
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def user_server() -> Found | None:
    """Step 3: the user's `evalq server`, if its process lives and its API answers."""
    from flows.runtime.user_server import running_server

    record = running_server()
    return None if record is None else Found(record.api_url, Source.USER_SERVER, shared_url=record.advertised_url)


def folder_server(home: Path | str = DEFAULT_HOME) -> Found | None:
    """Step 4 without starting anything: the server an evalq command serves the folder's database with now."""
    record = live_record(Path(home).resolve())
    return None if record is None else Found(record.api_url, Source.FOLDER, home=Path(home))


def find_prefect(api: str | None = None, home: Path | str | None = DEFAULT_HOME) -> Found | None:
    """Steps 1-4 without starting a server (`home=None`: no step 4)."""
    return configured_api(api) or user_server() or (folder_server(home) if home is not None else None)


def no_server(home: Path | str | None = None) -> InputError:
    """The one line of a command that found no server, with the fix."""
    fix = f"pass --api URL, set PREFECT_API_URL, or {START_HINT}"
    if home is not None:
        fix += f"; no campaign has run in this folder ({Path(home)}/ holds no embedded database)"
    return InputError(None, f"no Prefect server found: {fix}")


def require_prefect(api: str | None = None, check: bool = True) -> Found:
    """Steps 1-3, for a command that needs a server that stays up, else one line with the fix;
    `check`: fail in one line unless it answers."""
    found = find_prefect(api, home=None)
    if found is None:
        raise no_server()
    if check:
        check_server(found)
    return found


def check_server(found: Found) -> None:
    """One line naming the server and where it came from, unless it answers."""
    try:
        check_api(found.api_url)
    except InputError as exc:
        raise InputError(None, f"{exc} (from {found.source.value})") from None


@contextlib.contextmanager
def pointed_at(api_url: str) -> Iterator[None]:
    """This process and the processes it starts talk to `api_url` within the block."""
    from flows.runtime.api import use_api

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with use_api(api_url):  # Prefect read its settings when first imported
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


@contextlib.contextmanager
def reading_prefect(api: str | None = None, home: Path | str = DEFAULT_HOME) -> Iterator[Found]:
    """Steps 1-4 for a command that reads campaigns: the folder's database is served for the
    block when no server is up; this process points at the server meanwhile."""
    found = find_prefect(api, home)
    with contextlib.ExitStack() as stack:
        if found is None:
            found = open_folder(home, stack)
        else:
            check_server(found)
        stack.enter_context(pointed_at(found.api_url))
        yield found


def open_folder(home: Path | str, stack: contextlib.ExitStack) -> Found:
    """Step 4: the folder's database, served until `stack` closes; one line when it has none."""
    reader = FolderReader(home)
    stack.callback(reader.close)
    api_url = reader.open()
    if api_url is None:
        raise no_server(home)
    return Found(api_url, Source.FOLDER, home=Path(home), started=reader.started)


def find_or_start_user_server(api: str | None = None) -> Found:
    """Steps 1-3, else start the user's `evalq server` in the background (and leave it up): for
    long-lived services that must have a server, as task-spooler starts its own."""
    from flows.runtime.user_server import server_home, start_in_background

    found = find_prefect(api, home=None)
    if found is not None:
        check_server(found)
        return found
    record = start_in_background(server_home())
    return Found(record.api_url, Source.USER_SERVER, shared_url=record.advertised_url, started=True)
