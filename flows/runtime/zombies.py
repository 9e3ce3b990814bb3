"""Crashed detection: Prefect's documented proactive automation for silent flow runs.

Episodes heartbeat (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`); a self-hosted server has no
zombie detection of its own, so a run whose heartbeats stop for `missed_after` seconds
without a final state is marked Crashed, and the campaign requeues it. The automation
watches every flow run that heartbeats, so every flow run of ours heartbeats every
`HEARTBEAT_SECONDS` (`heartbeating()` where the flow runs in the calling process, such as
`evalq campaign run`): at Prefect's default of 180 s, a live run would be crashed.

The window outlasts an API outage the runs wait out: heartbeats sent during one are kept and
resent once the server is back, but the server's services judge a run by its last heartbeat
*delivered*, up to a heartbeat interval before the outage began, as soon as they start again
(measured with a window of 90 s: an outage of 89 s crashed two of three live runs, which then
play twice). The cost: a run whose process died is found only after `MISSED_AFTER` (6 min,
was 90 s); a dead warm runner's runs are found sooner through the runner's own liveness.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from flows.naming import MISCONFIGURED_STATE, NOT_RETRYABLE_STATE, SKIPPED_STATE
from flows.runtime.api_health import OUTAGE_BUDGET_SECONDS

FINAL_STATE_NAMES = ("Completed", "Failed", "Cancelled", "Crashed", SKIPPED_STATE, NOT_RETRYABLE_STATE, MISCONFIGURED_STATE)
AUTOMATION_NAME = "evalq: crash flow runs with missed heartbeats"
HEARTBEAT_SECONDS = 30
"""The lowest heartbeat frequency Prefect allows; workers get it in their env."""
MISSED_AFTER = timedelta(seconds=OUTAGE_BUDGET_SECONDS + 2 * HEARTBEAT_SECONDS)
"""How long a run may stay silent before it is marked Crashed: an API outage of up to the budget
(the server's start included), a heartbeat interval, and one more as a margin: 6 min."""

if TYPE_CHECKING:
    from prefect.automations import Automation


def heartbeating():
    """A context in which flow runs started by this process heartbeat every `HEARTBEAT_SECONDS`."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_SECONDS})


def zombie_automation(missed_after: timedelta = MISSED_AFTER) -> "Automation":
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name=AUTOMATION_NAME,
        description="Marks a flow run Crashed when its heartbeats stop without a final state.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # State events are named after the state's *name*: our custom final names count too.
            expect={
                "prefect.flow-run.heartbeat",
                *(f"prefect.flow-run.{name}" for name in FINAL_STATE_NAMES),
            },
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=missed_after,
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message="No heartbeat: the run's process is gone.")],
    )


async def install_zombie_automation(missed_after: timedelta = MISSED_AFTER) -> bool:
    """Create the automation, or replace an older definition of it; True if it was (re)created.
    (Tests that wait for a crash install a shorter `missed_after`, then the default again.)"""
    from prefect.automations import Automation

    wanted = zombie_automation(missed_after)
    try:
        existing = await Automation.aread(name=AUTOMATION_NAME)
    except ValueError:
        existing = None
    if existing is not None:
        if existing.trigger == wanted.trigger and existing.actions == wanted.actions:
            return False
        await existing.adelete()
    await wanted.acreate()
    return True
