"""What the campaign's loop asks of the kind of jobs it dispatches: one small interface.

The loop (`loop.py`) dispatches jobs just in time, reads their runs, settles what they end as,
requeues, follows reruns and runners gone, whatever the jobs are. What differs between kinds is
here: which pools a job goes through and how wide their windows are (the `Dispatcher`), a job's
flow-run parameters, tags and job variables, whether its result exists, what its plan says,
and what happens around a run's end. Pure: no Prefect. Two kinds exist:
- episodes (`episodes.py`): a policy-server slot each, steered to a server, their metrics
  files the results, the slots of a crashed run given back;
- batch items (`flows/batch/kind.py`): no slot, one work pool, a result record per item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Collection
from uuid import UUID

from flows.campaign.dispatch import Dispatchable, Dispatcher, Ticket

if TYPE_CHECKING:
    from flows.campaign.outcomes import Outcome


class JobKind(ABC):
    """One kind of job, as the loop of a campaign sees it."""

    title: str = "Campaign"
    """What the log calls a campaign of them ("Campaign", "Batch")."""
    noun: str = "jobs"
    """What the log calls the jobs ("episodes", "items")."""
    rerun_cancelled: str = "rerun them with --only"
    """How a user runs again the jobs an earlier invocation left cancelled (said in the log)."""
    ready_states: tuple[str, ...] = ()
    """Running-state names that say a run is ready to hold what it waits for (the prefetch
    tuner's load time; a run seen ready is read again only when it leaves them)."""
    completed_is_done: bool = False
    """A job whose latest run completed is done even without its result (a new invocation
    does not run it again; `record_done` writes the result)."""

    @abstractmethod
    def dispatcher(self, prefetch: int, max_in_flight: int | None, resume_at: int | None) -> Dispatcher:
        """The dispatcher of these jobs: their pools and windows."""

    @abstractmethod
    def done(self, job: Dispatchable) -> bool:
        """Whether the job's result exists (nothing left to run)."""

    @abstractmethod
    def parameters(self, ticket: Ticket) -> dict:
        """The flow-run parameters of the ticket's run."""

    @abstractmethod
    def tags(self, ticket: Ticket) -> list[str]:
        """The tags of the ticket's run (`flows/naming.py`)."""

    def job_variables(self, ticket: Ticket) -> dict | None:
        """Job variables of the ticket's run on its work pool (None: the deployment's)."""
        return None

    @abstractmethod
    def plan_value(self, total: int) -> dict:
        """The campaign's plan variable (`flows/campaign/plan.py`)."""

    def describe(self) -> str:
        """The rest of the loop's first log line, after the counts (e.g. "4 pools")."""
        return ""

    def capacity(self, pool: str) -> int:
        """What `pool` holds at once (the prefetch tuner's scale)."""
        return 1

    def queued(self, job: Dispatchable) -> None:
        """The job was queued for dispatch (again)."""

    def settled(self, job: Dispatchable) -> None:
        """The job settled: done, failed or cancelled (not a retry)."""

    def held_seconds(self, job: Dispatchable) -> float:
        """How long the done job held what it needed (0: unknown; the prefetch tuner's sample)."""
        return 0.0

    def landed(self, state) -> tuple[str, str] | None:
        """(server, pool) a Running state says the run took, if it says so."""
        return None

    def takes_as_fed(self, state) -> bool:
        """Whether a final state is enough as its event tells it (no read of the run back)."""
        return False

    async def run_ended(self, client, run, ticket: Ticket, outcome: "Outcome") -> None:
        """After the loop settled a run's end as `outcome` (requeued or not); `run` as read, or
        None when the state came from its event (`takes_as_fed`)."""

    def record_done(self, job: Dispatchable, record) -> None:
        """A new invocation found the job's latest run completed (`completed_is_done`):
        `record` is its `history.EpisodeRecord`."""

    async def stats(self, client, dispatcher: Dispatcher) -> tuple[list[str], list[str]]:
        """The stats line's parts per pool, and its warnings."""
        return [], []

    async def maintain(self, client, in_flight: Collection[UUID]) -> None:
        """Called every tick, for housekeeping of the kind's own (it keeps its own pace); `in_flight`:
        the runs the loop has not settled yet (ended or not), which it must leave alone."""
