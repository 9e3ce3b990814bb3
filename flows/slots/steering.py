"""Steering flexible episodes away from the servers that constrained ones need: pure logic.

A job that only one server can run has nowhere else to go; a job that several can run
should take the one whose exclusive backlog (work only it can do, per slot) is smallest.
The campaign keeps this count over the jobs not yet settled and hands each episode its
candidate servers in that order, after the server the dispatcher meant it for
(`flows/campaign/dispatch.py`); the episode's leaser tries them in that order when several are free.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from generate.models import Job, Resources, Server


@dataclass(frozen=True)
class Candidate:
    pool: str
    server: Server


def candidates(job: Job, resources: Resources) -> list[Candidate]:
    """Servers that may run the job: its pools in order, each pool's servers in order."""
    return [
        Candidate(pool, server)
        for pool in job.resource_types
        for server in resources.servers(pool)
        if server.serves(job.payload.task)
    ]


class ExclusiveDemand:
    def __init__(self, resources: Resources):
        self.resources = resources
        self.capacity = {s.address: s.capacity for pool in resources.pools for s in resources.servers(pool)}
        self.exclusive: Counter[str] = Counter()

    def servers(self, job: Job) -> list[str]:
        """The job's candidate server addresses, each once, in pool order."""
        return list(dict.fromkeys(c.server.address for c in candidates(job, self.resources)))

    def servers_in(self, job: Job, pool: str) -> list[str]:
        """The servers of `pool` that can run the job."""
        return list(dict.fromkeys(c.server.address for c in candidates(job, self.resources) if c.pool == pool))

    def add(self, job: Job) -> None:
        """A job to do: if only one server can run it, that server's backlog grows."""
        servers = self.servers(job)
        if len(servers) == 1:
            self.exclusive[servers[0]] += 1

    def settled(self, job: Job) -> None:
        servers = self.servers(job)
        if len(servers) == 1 and self.exclusive[servers[0]] > 0:
            self.exclusive[servers[0]] -= 1

    def preference(self, job: Job, first: str | None = None) -> list[str]:
        """The job's servers: `first` (the one the dispatcher meant it for), then the one with
        the least exclusive work per slot (stable)."""
        return sorted(self.servers(job), key=lambda address: (address != first, self.exclusive[address] / self.capacity[address]))
