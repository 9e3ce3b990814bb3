"""Episodes as the campaign's loop dispatches them (`kinds.JobKind`): a policy-server slot each.

Their pools are policy-server pools: per pool at most `capacity + prefetch x servers` in flight,
each job queued for the servers that can run it and steered to the one with the least work
only it can do (`flows/slots/steering.py`). An episode is done when its metrics file exists;
its Running state says which server it took; a run that ends Crashed or Cancelled may have died
holding a slot, which is given back at once (`flows/slots/reclaim.py`).
"""

from __future__ import annotations

from pathlib import Path

from flows.campaign.dispatch import Dispatcher, Ticket
from flows.campaign.kinds import JobKind
from flows.campaign.outcomes import Outcome
from flows.campaign.plan import plan_value
from flows.campaign.settings import CampaignSettings
from flows.naming import (
    RUNNING_STATE,
    WAITING_STATE,
    episode_tags,
    pool_limit,
    slot_of_running_message,
)
from flows.results.metrics_files import read_provenance
from flows.slots.steering import ExclusiveDemand
from generate.models import Job, Resources


class Episodes(JobKind):
    """The episodes of one campaign on its policy-server pools."""

    noun = "episodes"
    ready_states = (WAITING_STATE, RUNNING_STATE)

    def __init__(self, resources: Resources, settings: CampaignSettings):
        self.resources = resources
        self.s = settings
        self.demand = ExclusiveDemand(resources)

    def dispatcher(self, prefetch: int, max_in_flight: int | None, resume_at: int | None) -> Dispatcher:
        resources = self.resources
        return Dispatcher(
            {pool: resources.capacity(pool) for pool in resources.pools},
            prefetch=prefetch,
            max_in_flight=max_in_flight,
            resume_at=resume_at,
            alternatives=lambda job: len(self.demand.servers(job)),
            servers={pool: {s.address: s.capacity for s in resources.servers(pool)} for pool in resources.pools},
            compatible=self.demand.servers_in,
        )

    def done(self, job: Job) -> bool:
        return job.metrics_path(self.s.results_dir).exists()

    def parameters(self, ticket: Ticket) -> dict:
        job = ticket.job
        return {
            "job": job.model_dump(mode="json"),
            "resources": {pool: [s.model_dump(mode="json") for s in self.resources.servers(pool)] for pool in job.resource_types},
            "results_dir": str(Path(self.s.results_dir).resolve()),
            "evaluator": self.s.evaluator,
            "evaluator_options": self.s.evaluator_options,
            "campaign": self.s.name,
            "lease_seconds": self.s.lease_seconds,
            "poll_seconds": self.s.poll_seconds,
            "timeout_seconds": self.s.timeout_seconds,
            "prefer": self.demand.preference(job, first=ticket.server),
            "server_wait_seconds": self.s.server_wait_seconds,
        }

    def tags(self, ticket: Ticket) -> list[str]:
        return episode_tags(ticket.job, self.s.name, ticket.pool, ticket.attempt)

    def plan_value(self, total: int) -> dict:
        return plan_value(self.s.planned or total, self.resources, self.s.name)

    def describe(self) -> str:
        return f"{len(self.resources.pools)} pools"

    def capacity(self, pool: str) -> int:
        return self.resources.capacity(pool)

    def queued(self, job: Job) -> None:
        self.demand.add(job)

    def settled(self, job: Job) -> None:
        self.demand.settled(job)

    def held_seconds(self, job: Job) -> float:
        """How long the episode held its server, from its metrics file (0 if unknown)."""
        provenance = read_provenance(job.metrics_path(self.s.results_dir))
        return provenance.held_seconds if provenance else 0.0

    def landed(self, state) -> tuple[str, str] | None:
        return slot_of_running_message(state.message) if state.name == RUNNING_STATE else None

    def takes_as_fed(self, state) -> bool:
        from prefect.client.schemas.objects import StateType

        return state.type == StateType.COMPLETED  # nothing to give back, no history to read

    async def run_ended(self, client, run, ticket: Ticket, outcome: Outcome) -> None:
        from prefect.client.schemas.objects import StateType

        from flows.slots.reclaim import release_slots_of

        if run is not None and run.state.type in (StateType.CRASHED, StateType.CANCELLED):  # its holder may be gone, its lease not
            await release_slots_of(client, str(run.id), self.s.name, run.created)

    async def stats(self, client, dispatcher: Dispatcher) -> tuple[list[str], list[str]]:
        """`a_1 1/1 (2 in flight)` per pool (busy slots from its limit), and the quarantine warnings."""
        from flows.slots.pools import quarantine_warnings, read_limits

        limits, warnings = {}, []
        try:  # one read of every limit: the pools' and the servers'
            limits = await read_limits(client)
            warnings = await quarantine_warnings(client, self.resources, limits)
        except Exception:  # stats must never stop a campaign
            pass
        pools = []
        for pool in self.resources.pools:
            busy = limits[pool_limit(pool)][1] if pool_limit(pool) in limits else "?"
            pools.append(f"{pool} {busy}/{self.resources.capacity(pool)} ({dispatcher.in_flight[pool]} in flight)")
        return pools, warnings
