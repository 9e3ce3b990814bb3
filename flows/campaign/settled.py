"""The runs a campaign settled a job with, read again: the campaign follows their truth.

The campaign settles a job by its run's final state (done, failed, cancelled). Someone may
rerun that very run later: the Prefect UI's Retry and `prefect flow-run retry` set it
Scheduled again, under the same id, and any runner of its pool plays it; a cancel from the
UI may end it otherwise. So the runs that settled a job as failed or cancelled stay in view
(`SettledRuns`): every few seconds, and once more before the campaign ends, the campaign
reads the ones whose state changed since it settled them and takes them back in flight
(`CampaignLoop.reopen`); their next end settles the job again, and the tally, the stats line,
`failed.txt`, the artifacts and the leaderboard follow it.

Cost: two reads of the campaign's runs per look, whatever its size: those in an active
state (few under just-in-time dispatch, the campaign's own runs in flight among them) and
those that ended since the last look (Prefect clears a run's end time when it leaves a final
state and sets it again at its next end); with up to `FEW` settled runs both ask for those
runs alone. No read while nothing is settled as failed or cancelled.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from flows.campaign.dispatch import Ticket
from flows.campaign.history import read_campaign_runs
from flows.campaign.outcomes import Outcome

FOLLOWED = (Outcome.FAILED, Outcome.CANCELLED)
"""Settlements a rerun can overturn (a done job has its metrics: a rerun of it skips)."""
ACTIVE_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED")
MARGIN = dt.timedelta(seconds=10)
"""Overlap between looks: an end committed late is still seen."""
FEW = 200
"""Up to this many settled runs, the reads ask for them by id (the answers hold only those)."""


@dataclass
class SettledRun:
    """A run that settled its job, as the campaign saw it then."""

    ticket: Ticket
    outcome: Outcome
    state_id: UUID | None


class SettledRuns:
    """The campaign's settled runs that a rerun could overturn, by run id."""

    def __init__(self) -> None:
        self.runs: dict[UUID, SettledRun] = {}
        self.looked_at: dt.datetime | None = None

    def note(self, run_id: UUID, ticket: Ticket, outcome: Outcome, state_id: UUID | None) -> None:
        if outcome in FOLLOWED:
            self.runs[run_id] = SettledRun(ticket, outcome, state_id)

    def forget(self, run_id: UUID) -> SettledRun | None:
        return self.runs.pop(run_id, None)

    async def changed(self, client, campaign: str) -> list[tuple[object, SettledRun]]:
        """(flow run, how it was settled) for every settled run whose state changed since."""
        if not self.runs:
            self.looked_at = None
            return []
        now = dt.datetime.now(dt.timezone.utc)
        since = (self.looked_at or now - MARGIN) - MARGIN
        found: dict[UUID, object] = {}
        ids = {"id": {"any_": [str(run_id) for run_id in self.runs]}} if len(self.runs) <= FEW else {}
        for criteria in ({"state": {"type": {"any_": list(ACTIVE_TYPES)}}}, {"end_time": {"after_": since.isoformat()}}):
            for run in await read_campaign_runs(client, campaign, **criteria, **ids):
                if run.id in self.runs:
                    found[run.id] = run
        self.looked_at = now
        return [(run, self.runs[run_id]) for run_id, run in found.items()
                if run.state is not None and run.state.id != self.runs[run_id].state_id]

