"""How the campaign reads a finished episode's state."""

import pytest
from prefect.client.schemas.objects import StateType

from flows.naming import MISCONFIGURED_STATE, NOT_RETRYABLE_STATE, SKIPPED_STATE
from flows.campaign.outcomes import Outcome, classify


@pytest.mark.parametrize(
    "state_type, name, attempt, expected",
    [
        (StateType.COMPLETED, "Completed", 1, Outcome.DONE),
        (StateType.COMPLETED, SKIPPED_STATE, 1, Outcome.DONE),
        (StateType.FAILED, "Failed", 1, Outcome.RETRY),
        (StateType.CRASHED, "Crashed", 2, Outcome.RETRY),
        (StateType.CRASHED, "Crashed", 3, Outcome.FAILED),
        (StateType.FAILED, NOT_RETRYABLE_STATE, 1, Outcome.FAILED),
        (StateType.FAILED, MISCONFIGURED_STATE, 1, Outcome.STOP),
        (StateType.CANCELLED, "Cancelled", 1, Outcome.CANCELLED),
        (StateType.CANCELLING, "Cancelling", 1, None),
        (StateType.RUNNING, "WaitingForServer", 1, None),
        (StateType.SCHEDULED, "Scheduled", 1, None),
        (StateType.PENDING, "Pending", 1, None),
    ],
)
def test_classify(state_type, name, attempt, expected):
    assert classify(state_type, name, attempt, max_attempts=3) == expected


@pytest.mark.parametrize(
    "state_type, message, expected",
    [
        (StateType.CRASHED, "Execution was cancelled by the runtime environment.", Outcome.RETRY),  # scancel: requeued
        (StateType.CRASHED, "No heartbeat: the run's process is gone.", Outcome.RETRY),
        (StateType.CANCELLED, "Cancelled in Prefect: scancel of SLURM job 12", Outcome.CANCELLED),
        (StateType.FAILED, "Execution was cancelled (an evaluator's own words)", Outcome.RETRY),
    ],
)
def test_a_cancel_is_never_retried(state_type, message, expected):
    assert classify(state_type, state_type.value.title(), 1, max_attempts=3, message=message) == expected
