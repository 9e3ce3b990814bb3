"""The reads of `evalq campaign ...` and `evalq pools ...` on the server the rule finds
(`flows/runtime/discovery.py`), and a named campaign where it lives.

A campaign's runs stay on the server it ran on: the user's `evalq server`, or this folder's
embedded database when none was up. So a command that names a campaign reads it on the server
the rule finds, and when that is the user's server (found by looking, not named with `--api`
or PREFECT_API_URL) and it does not know the campaign, in the folder's database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import typer

from flows.runtime.discovery import (
    API_HELP,
    Found,
    Source,
    check_server,
    find_prefect,
    open_folder,
    pointed_at,
    reading_prefect,
)
from flows.runtime.folder_server import DEFAULT_HOME, has_database

T = TypeVar("T")
Action = Callable[..., Awaitable[T]]

API = typer.Option(None, "--api", help=API_HELP)
HOME = typer.Option(DEFAULT_HOME, "--home", help="The folder whose embedded database to read when no other server is found")


def with_client(action: Action) -> T:
    """`action(client)` with a Prefect client of the server this process points at."""
    from prefect import get_client

    async def go():
        async with get_client() as client:
            return await action(client)

    return asyncio.run(go())


def on_prefect(action: Action, api: str | None, home: Path) -> T:
    """`action(client)` on the server the rule finds; says which once it answered."""
    with reading_prefect(api, home) as found:
        result = with_client(action)
    found.announce()
    return result


def on_campaign_server(name: str, action: Action, api: str | None, home: Path) -> tuple[T, Found, Found | None]:
    """`action(client)` where campaign `name` lives: the result, the server read, and the user's
    server when it was passed over for the folder's database (which did not know the campaign)."""
    from flows.reports.listing import campaign_known

    with contextlib.ExitStack() as stack:
        found, passed = find_prefect(api, home), None
        if found is None:
            found = open_folder(home, stack)
        else:
            check_server(found)
            if found.source is Source.USER_SERVER and has_database(home):
                with pointed_at(found.api_url):
                    known = with_client(lambda client: campaign_known(client, name))
                if not known:
                    passed, found = found, open_folder(home, stack)
        with pointed_at(found.api_url):
            return with_client(action), found, passed


def on_every_campaign_server(action: Action, api: str | None, home: Path) -> list[tuple[Found, T]]:
    """`action(client)` on the server the rule finds and, when that is the user's server found by
    looking, on this folder's embedded database too (if a campaign has run here)."""
    results = []
    with contextlib.ExitStack() as stack:
        found = stack.enter_context(reading_prefect(api, home))
        results.append((found, with_client(action)))
        if found.source is Source.USER_SERVER and has_database(home):
            folder = open_folder(home, stack)
            with pointed_at(folder.api_url):
                results.append((folder, with_client(action)))
    return results


def where(found: Found, passed: Found | None) -> str:
    """Where a campaign was looked for, for a line saying it is not there."""
    if passed is not None:
        return f"{passed.describe()} nor on {found.describe()}"
    if found.source is Source.FOLDER:
        return f"{found.describe()} (your evalq server is not running: if the campaign ran there, `evalq server start --detach`)"
    return found.describe()
