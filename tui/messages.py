"""Every message the data side sends to the widgets: small dataclasses.

Snapshot messages replace an older one of the same kind still in the queue
(`can_replace`), so a slow UI never renders stale refreshes one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tui.models import (
    EpisodeDetail,
    EpisodesPage,
    LogLine,
    PoolsSnapshot,
    QueueSnapshot,
    RowsPage,
)


class Coalesced(Message):
    def can_replace(self, message: Message) -> bool:
        return type(message) is type(self)


@dataclass
class QueueLoaded(Coalesced):
    snapshot: QueueSnapshot | None
    rows: RowsPage
    generation: int = 0
    """The app's campaign generation when the read began: a switch of campaign drops older ones."""


@dataclass
class EpisodesLoaded(Coalesced):
    page: EpisodesPage
    generation: int = 0


@dataclass
class PoolsLoaded(Coalesced):
    snapshot: PoolsSnapshot
    generation: int = 0


@dataclass
class LogsArrived(Message):
    """A batch of new log lines (the tail flushes a few times a second at most)."""

    lines: list[LogLine]
    campaign: str | None = None
    """The campaign whose runs the lines were matched against (lines of another are dropped)."""


@dataclass
class LogStreamStatus(Coalesced):
    error: str | None


@dataclass
class DetailLoaded(Coalesced):
    detail: EpisodeDetail
    generation: int = 0


@dataclass
class ApiStatus(Coalesced):
    """The API answered (error None) or failed with `error`."""

    error: str | None


@dataclass
class ActionDone(Message):
    text: str
    ok: bool = True


@dataclass
class EpisodeSelected(Message):
    """Open the episode screen of a flow run."""

    flow_run_id: str


@dataclass
class RowSelected(Message):
    team: str
    task: str


@dataclass
class PageRequested(Message):
    """A table asks for another page: `table` is "rows" or "episodes"."""

    table: str
    delta: int
