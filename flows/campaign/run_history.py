"""One flow run's state history read as attempts: pure.

A run normally ends once. A run rerun in place, by the Prefect UI's Retry or `prefect
flow-run retry` (both set the ended run Scheduled again), ends once per rerun under the same
id, name and tags: only its state history keeps the earlier ends. `attempt_ends` finds them,
each with whether someone asked to cancel it on its way (a Cancelling state since the run
last left a final state), so a cancel before a rerun does not make the rerun's failure a
cancel too. No Prefect here: state types are compared by their names (Prefect's `StateType`
is a string enum).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Protocol

FINAL_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
FAILED_TYPES = frozenset({"FAILED", "CRASHED"})
CANCELLING = "CANCELLING"


class StateLike(Protocol):
    type: str
    """A Prefect `StateType` (a string enum) or its name."""
    name: str | None
    message: str | None
    timestamp: dt.datetime


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt of a run ended."""

    state_type: str
    state_name: str
    message: str
    at: dt.datetime
    cancel_requested: bool = False
    """Someone asked to cancel this attempt (it went through Cancelling)."""
    started: dt.datetime | None = None
    """When the run left its previous end (None for its first attempt)."""

    @property
    def failed(self) -> bool:
        """A failure of the run itself: Failed or Crashed, not after a cancel request."""
        return self.state_type in FAILED_TYPES and not self.cancel_requested

    @property
    def reason(self) -> str:
        return f"{self.state_name}: {self.message}" if self.message else self.state_name


def attempt_ends(states: Iterable[StateLike]) -> list[AttemptEnd]:
    """Each end of the run, oldest first. Final states in a row (a forced correction) are one
    end: the last of them."""
    ends: list[AttemptEnd] = []
    cancel_asked = False
    started: dt.datetime | None = None
    previous_final = False
    for state in sorted(states, key=lambda s: s.timestamp):
        if state.type in FINAL_TYPES:
            end = AttemptEnd(state.type, state.name or str(getattr(state.type, "value", state.type)).title(), state.message or "", state.timestamp,
                             cancel_asked, started)
            if previous_final:
                ends[-1] = end
            else:
                ends.append(end)
            previous_final = True
            continue
        if previous_final:  # left an end: a rerun in place
            cancel_asked, started = False, state.timestamp
        previous_final = False
        cancel_asked = cancel_asked or state.type == CANCELLING
    return ends


def cancel_in_last_attempt(states: Iterable[StateLike]) -> bool:
    """Whether the run's current (or last) attempt went through Cancelling."""
    asked, previous_final = False, False
    for state in sorted(states, key=lambda s: s.timestamp):
        final = state.type in FINAL_TYPES
        if previous_final and not final:
            asked = False  # a rerun in place starts afresh
        asked = asked or state.type == CANCELLING
        previous_final = final
    return asked
