"""A batch's items: the item list file, an item as the dispatcher sees it, and its result record.

An item list is the batch submitter's `--item_list`: one item id a line; blank lines and `#`
comments are ignored (the format of `failed_items.txt` and of a campaign's `--only`). An item
id becomes part of run names, idempotency keys and a folder name, so it is 1-200 characters
of letters, digits and `. _ - + = @`, starting with a letter or a digit (no `/`, no `:`, no
space); any other line is one error naming the file and the line. An id listed twice runs once.

Each item has a folder under the batch's results dir, `<results-dir>/<item>/`, which its
command may write to (`{item_dir}`); the batch writes `evalq-item.json` there once a run of the
item completed (`ItemResult`): what tells a new invocation the item is done, as a metrics file
does for an episode. Purging the batch's runs never touches it.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flows.campaign.selection import parse_id_lines
from generate.errors import InputError
from generate.jsonio import read_text

ITEM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")
RESULT_FILE = "evalq-item.json"
FAILED_ITEMS_FILE = "failed_items.txt"
"""The failed (not cancelled) item ids, one a line: an item list (`--items`) for a batch of their own."""


class BatchItem(BaseModel):
    """One item of a batch: its id, and the work pool its run goes to (a `Dispatchable`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    pool: str

    @property
    def resource_types(self) -> list[str]:
        """The one pool whose window it goes through (the dispatcher's word for a job's pools)."""
        return [self.pool]


def item_problem(item: str) -> str | None:
    """Why `item` cannot be an item id, or None."""
    if ITEM_ID.fullmatch(item):
        return None
    if len(item) > 200:
        return f"item id of {len(item)} characters (at most 200)"
    bad = next((c for c in item if not (c.isascii() and (c.isalnum() or c in "._+=@-"))), None)
    if bad is not None:
        return f"item id {item!r} has {'a space' if bad.isspace() else repr(bad)} (letters, digits and . _ - + = @ only)"
    return f"item id {item!r} must start with a letter or a digit"


def read_item_list(path: Path | str) -> list[str]:
    """The item ids of an item list, each once, in file order; `InputError` naming the file and
    line for a bad one, or for a list without any."""
    path = Path(path)
    ids: dict[str, None] = {}
    for number, item in parse_id_lines(read_text(path).removeprefix("\ufeff")):  # a BOM from a Windows editor
        problem = item_problem(item)
        if problem:
            raise InputError(path, f"line {number}: {problem}")
        ids.setdefault(item, None)
    if not ids:
        raise InputError(path, "no item ids (only blank lines and # comments)")
    return list(ids)


def item_dir(results_dir: Path | str, item: str) -> Path:
    """`<results-dir>/<item>`: the item's folder (its id is a safe name: `item_problem`)."""
    return Path(results_dir) / item


def result_path(results_dir: Path | str, item: str) -> Path:
    return item_dir(results_dir, item) / RESULT_FILE


class ItemResult(BaseModel):
    """`<results-dir>/<item>/evalq-item.json`: a run of the item completed."""

    item: str
    batch: str
    flow_run_id: str
    attempt: int
    state: str
    """The completed run's state name (`Completed`)."""
    started: dt.datetime | None = None
    finished: dt.datetime | None = None

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.started and self.finished else None
