"""What a finished episode run means for the campaign: pure, from its state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from prefect.client.schemas.objects import StateType

from flows.naming import MISCONFIGURED_STATE, NOT_RETRYABLE_STATE

"""How Prefect's engine words a crash caused by a cancellation (e.g. `prefect flow-run cancel`
on a SLURM episode): the user's word, not a failure."""


class Outcome(str, Enum):
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOP = "stop"
    """A configuration error every episode would hit: the campaign stops."""


def is_cancelled(state_type: StateType, message: str | None, cancel_requested: bool = False) -> bool:
    """Cancelled by someone: state Cancelled, or Failed/Crashed after someone asked for a cancel
    (`cancel_requested`: the run went through Cancelling, as a cancel from the UI, evaltui or the
    CLI does). A crash alone, even "Execution was cancelled" (a SLURM scancel, a preemption), is
    not the user's word: it is requeued."""
    if state_type == StateType.CANCELLED:
        return True
    return cancel_requested and state_type in (StateType.FAILED, StateType.CRASHED)


def classify(
    state_type: StateType, state_name: str | None, attempt: int, max_attempts: int, message: str | None = None,
    cancel_requested: bool = False,
) -> Outcome | None:
    """None while the run is not final; Crashed/Failed are retried until the budget is spent.

    A cancel is never retried (`is_cancelled`); a configuration error stops the campaign."""
    if state_type == StateType.COMPLETED:
        return Outcome.DONE
    if is_cancelled(state_type, message, cancel_requested):
        return Outcome.CANCELLED
    if state_type == StateType.CANCELLING:
        return None
    if state_type in (StateType.FAILED, StateType.CRASHED):
        if state_name == MISCONFIGURED_STATE:
            return Outcome.STOP
        if state_name == NOT_RETRYABLE_STATE or attempt >= max_attempts:
            return Outcome.FAILED
        return Outcome.RETRY
    return None


@dataclass
class Tally:
    """Running totals of a campaign; `failures` and `cancelled` keep the last message per job."""

    total: int = 0
    already_done: int = 0
    done: int = 0
    retried: int = 0
    fresh_attempts: int = 0
    """Jobs that had failed in an earlier invocation and got new attempts in this one."""
    failures: dict[str, str] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)
    held_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.already_done + self.done + len(self.failures) + len(self.cancelled)
