"""Episodes in known states, written through the Prefect API as the core flows would.

Tests, the 50k benchmark and demos use it to fill a Prefect server with episode flow
runs named and tagged per `flows/naming.py`, pool limits, slot events and logs,
without running a single evaluator.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

from flows import naming
from flows.slots.events import SlotEvent
from generate.models import Job, JobPayload

FINAL_STATES: dict[str, tuple[str, str]] = {
    "completed": ("COMPLETED", "Completed"),
    "skipped": ("COMPLETED", naming.SKIPPED_STATE),
    "failed": ("FAILED", "Failed"),
    "not_retryable": ("FAILED", naming.NOT_RETRYABLE_STATE),
    "crashed": ("CRASHED", "Crashed"),
    "cancelled": ("CANCELLED", "Cancelled"),
    "scheduled": ("SCHEDULED", "Scheduled"),
    "pending": ("PENDING", "Pending"),
    "loading": ("RUNNING", naming.LOADING_STATE),
    "waiting": ("RUNNING", naming.WAITING_STATE),
    "running": ("RUNNING", naming.RUNNING_STATE),
}
"""Seed state keyword -> (Prefect state type, state name)."""


@dataclass(frozen=True)
class SeedEpisode:
    """One episode flow run to create."""

    team_slug: str
    task: str
    instance_id: int
    state: str = "completed"
    pool: str = "pool_a"
    attempt: int = 1
    track: str = "standard"

    def job(self) -> Job:
        payload = JobPayload(
            team=self.team_slug.replace("_", " ").title(),
            team_slug=self.team_slug,
            track=self.track,  # type: ignore[arg-type]
            task=self.task,
            instance_id=self.instance_id,
            instance_basename=f"{self.task}_{self.instance_id}.json",
            instance_path=f"test_instances/{self.task}/{self.task}_{self.instance_id}.json",
        )
        job_id = Job.make_id(self.team_slug, self.task, self.instance_id)
        return Job(id=job_id, payload=payload, resource_type=self.pool, resource_types=[self.pool])


@dataclass(frozen=True)
class SeedServer:
    """A policy server's slot limit: `busy` of `capacity` slots taken."""

    address: str
    pool: str
    capacity: int = 1
    busy: int = 0


@dataclass
class Seeded:
    """What `seed_episodes` created: flow-run ids by job id (last attempt wins)."""

    ids: dict[str, UUID] = field(default_factory=dict)


def grid(teams: list[str], tasks: list[str], instances: int, states: list[str], pool: str = "pool_a") -> list[SeedEpisode]:
    """Every (team, task, instance) with states cycling through `states`."""
    cycle = itertools.cycle(states)
    return [
        SeedEpisode(team, task, instance, next(cycle), pool)
        for team in teams
        for task in tasks
        for instance in range(instances)
    ]


def flow_run_body(flow_id: UUID, campaign: str, episode: SeedEpisode, results_dir: str, started: datetime) -> dict:
    job = episode.job()
    state_type, state_name = FINAL_STATES[episode.state]
    state: dict = {"type": state_type, "name": state_name}
    if state_type == "SCHEDULED":
        state["state_details"] = {"scheduled_time": started.isoformat()}
    return {
        "flow_id": str(flow_id),
        "name": naming.episode_run_name(campaign, job.id, episode.attempt),
        "parameters": {"job": job.model_dump(mode="json"), "results_dir": results_dir, "campaign": campaign},
        "tags": naming.episode_tags(job, campaign, episode.pool, episode.attempt),
        "state": state,
    }


async def seed_episodes(
    client, campaign: str, episodes: list[SeedEpisode], results_dir: str = "results", concurrency: int = 1
) -> Seeded:
    """Create the episodes' flow runs, `concurrency` requests at a time.

    SQLite serialises writers: one request at a time (~45 runs/s) beats several in
    parallel (~4/s, lock contention), so parallelism is opt-in for PostgreSQL.
    """
    response = await client.request("POST", "/flows/", json={"name": naming.EPISODE_FLOW})
    flow_id = UUID(response.json()["id"])
    seeded = Seeded()
    started = datetime.now(timezone.utc)
    queue: asyncio.Queue[SeedEpisode] = asyncio.Queue()
    for episode in episodes:
        queue.put_nowait(episode)

    async def creator() -> None:
        while not queue.empty():
            episode = queue.get_nowait()
            body = flow_run_body(flow_id, campaign, episode, results_dir, started)
            created = await client.request("POST", "/flow_runs/", json=body)
            seeded.ids[episode.job().id] = UUID(created.json()["id"])

    await asyncio.gather(*(creator() for _ in range(concurrency)))
    return seeded


async def seed_limits(client, servers: list[SeedServer]) -> None:
    """Create pool and server global concurrency limits with `busy` slots active."""
    pools: dict[str, list[SeedServer]] = {}
    for server in servers:
        pools.setdefault(server.pool, []).append(server)
    limits = [(naming.pool_limit(pool), sum(s.capacity for s in members), sum(s.busy for s in members)) for pool, members in pools.items()]
    limits += [(naming.server_limit_of_address(s.address), s.capacity, s.busy) for s in servers]
    for name, limit, busy in limits:
        await client.request("POST", "/v2/concurrency_limits/", json={"name": name, "limit": limit, "active_slots": busy})


def slot_event(name: str, address: str, pool: str, flow_run_id: UUID, job_id: str, occurred: datetime, lease_id: str | None = None) -> dict:
    """An `evalq.slot.*` or `evalq.server.unreachable` event as the episode flow emits it."""
    return SlotEvent(
        name=name, address=address, pool=pool, job_id=job_id, lease_id=lease_id or str(uuid4()),
        flow_run_id=str(flow_run_id), occurred=occurred,
    ).as_json()


async def emit_events(client, events: list[dict]) -> None:
    """POST events (the server persists them within a few seconds)."""
    await client.request("POST", "/events", json=events)


async def write_logs(client, flow_run_id: UUID, lines: list[tuple[int, str]], start: datetime | None = None) -> None:
    """Write `(level, message)` log lines of an episode flow run."""
    start = start or datetime.now(timezone.utc)
    body = [
        {
            "name": "prefect.flow_runs",
            "level": level,
            "message": message,
            "timestamp": (start + timedelta(milliseconds=index)).isoformat(),
            "flow_run_id": str(flow_run_id),
        }
        for index, (level, message) in enumerate(lines)
    ]
    await client.request("POST", "/logs/", json=body)
