"""A batch's items as the campaign's loop dispatches them (`flows.campaign.kinds.JobKind`).

No slot, no server: the one pool is the items' work pool, its window the batch's `--max-in-flight`
(the thresholds do the rest, `flows/campaign/dispatch.py`). An item is done once its result
record exists (`items.py`), written here when its run completed; a new invocation takes an item
whose latest run completed as done too (writing the record), so a batch run again never runs a
completed item twice, even if its dispatcher died before it saw the end.
"""

from __future__ import annotations

import datetime as dt
from typing import Collection
from uuid import UUID

from flows.batch.items import BatchItem, ItemResult, result_path
from flows.batch.settings import BatchSettings
from flows.batch.templates import fill_argv, fill_parameters, values_for
from flows.campaign.dispatch import Dispatcher, Ticket
from flows.campaign.kinds import JobKind
from flows.campaign.outcomes import Outcome
from flows.campaign.plan import CampaignPlan
from flows.naming import item_tags
from generate.jsonio import write_atomic

class BatchItems(JobKind):
    """The items of one batch on one work pool."""

    title = "Batch"
    noun = "items"
    completed_is_done = True
    rerun_cancelled = "run them again in a batch of their own, or with evaltui's r"

    def __init__(self, settings: BatchSettings, pipeline: str, keeper=None):
        self.s = settings
        self.pipeline = pipeline
        """The flow the items run (their `task:` tag)."""
        self.keeper = keeper
        """What drops finished runs while the batch runs (`keep.py`), if it keeps them for a while."""

    def dispatcher(self, prefetch: int, max_in_flight: int | None, resume_at: int | None) -> Dispatcher:
        return Dispatcher({self.s.pool: self.s.window}, prefetch=0, max_in_flight=max_in_flight, resume_at=resume_at)

    def done(self, job: BatchItem) -> bool:
        return result_path(self.s.results_dir, job.id).exists()

    def parameters(self, ticket: Ticket) -> dict:
        values = values_for(ticket.job.id, self.s.name, self.s.results_dir, ticket.attempt)
        if self.s.command is None:
            return fill_parameters(self.s.parameters, values)
        return {"item": ticket.job.id, "argv": fill_argv(self.s.command, values), "batch": self.s.name,
                "results_dir": self.s.results_dir, "attempt": ticket.attempt, "timeout_seconds": self.s.timeout_seconds,
                "cwd": self.s.cwd}

    def tags(self, ticket: Ticket) -> list[str]:
        return item_tags(self.s.name, ticket.job.id, ticket.pool, ticket.attempt, self.pipeline)

    def job_variables(self, ticket: Ticket) -> dict | None:
        return self.s.job_variables or None

    def plan_value(self, total: int) -> dict:
        return CampaignPlan(total=total, name=self.s.name, kind="batch").model_dump(mode="json", exclude={"pools"})

    def describe(self) -> str:
        return f"work pool {self.s.pool}"

    def capacity(self, pool: str) -> int:
        return self.s.window

    async def run_ended(self, client, run, ticket: Ticket, outcome: Outcome) -> None:
        if outcome is Outcome.DONE and not self.done(ticket.job):
            self.write_result(ItemResult(item=ticket.job.id, batch=self.s.name, flow_run_id=str(run.id), attempt=ticket.attempt,
                                         state=run.state.name, started=run.start_time, finished=run.end_time))

    def record_done(self, job: BatchItem, record) -> None:
        self.write_result(ItemResult(item=job.id, batch=self.s.name, flow_run_id=record.run_id, attempt=record.attempt,
                                     state=record.state_name, started=record.start_time, finished=record.end_time))

    def write_result(self, result: ItemResult) -> None:
        path = result_path(self.s.results_dir, result.item)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, result.model_dump_json(indent=2) + "\n")

    async def stats(self, client, dispatcher: Dispatcher) -> tuple[list[str], list[str]]:
        own = dispatcher.in_flight[self.s.pool]
        others = f", {dispatcher.others_in_flight} more on the pool" if self.s.count == "pool" else ""
        limit = f" (at most {self.s.max_in_flight}" + (f", resumes at {self.s.resume_threshold})" if dispatcher.stopped else ")") \
            if self.s.max_in_flight else ""
        return [f"{self.s.pool}: {own} in flight{others}{limit}"], []

    async def maintain(self, client, in_flight: Collection[UUID]) -> None:
        if self.keeper is not None:
            await self.keeper.maintain(client, dt.datetime.now(dt.timezone.utc), in_flight)
