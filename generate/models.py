"""The domain models shared by `evalq generate`, the flows and the dashboard.

`jobs.json` is a list of `Job`; `resources.json` maps a pool name to its list of
`Server`. The field layout keeps both files readable by tools made for the
original job queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter

Track = Literal["standard", "privileged"]
TRACKS: tuple[Track, ...] = ("standard", "privileged")


class JobPayload(BaseModel):
    """What an episode evaluates: one team's policy on one task instance."""

    model_config = ConfigDict(frozen=True)

    team: str
    """The team's name as submitted (may contain any unicode)."""
    team_slug: str
    """`slugify(team, separator="_")`: the only form used in paths and names."""
    track: Track
    task: str
    instance_id: int
    instance_basename: str
    """The instance file's name, e.g. `pick_cube_template-tro_state_3.json`."""
    instance_path: str
    """Path of the instance file as given to `evalq generate`."""


class Job(BaseModel):
    """One (team, task, instance) episode, and the pools that may serve it."""

    model_config = ConfigDict(frozen=True)

    id: str
    """`<team_slug>/<task>/<instance_id>`: unique within a campaign."""
    payload: JobPayload
    resource_type: str
    """The first pool in `resource_types`."""
    resource_types: list[str] = Field(min_length=1)
    """Every pool of the team compatible with the task, in pool order."""

    @staticmethod
    def make_id(team_slug: str, task: str, instance_id: int) -> str:
        return f"{team_slug}/{task}/{instance_id}"

    def metrics_path(self, results_dir: Path | str) -> Path:
        """Where this episode's metrics live once it is done."""
        return metrics_path(results_dir, self.payload.team_slug, self.payload.task, self.payload.instance_id)

    @property
    def user(self) -> str:
        """Who submitted, for the videos folder. Submissions name no user, only a team:
        the team slug is the submitting account (one entrant per slug)."""
        return self.payload.team_slug

    def video_path(self, results_dir: Path | str) -> Path:
        """Where this episode's video lives, if its evaluator records one."""
        return video_path(results_dir, self.payload.team_slug, self.user, self.payload.task, self.payload.instance_id)


def metrics_path(results_dir: Path | str, team_slug: str, task: str, instance_id: int) -> Path:
    """`<results_dir>/<team_slug>/metrics/<task>_<instance_id>.json`."""
    return Path(results_dir) / team_slug / "metrics" / f"{task}_{instance_id}.json"


def video_path(results_dir: Path | str, team_slug: str, user: str, task: str, instance_id: int) -> Path:
    """`<results_dir>/<team_slug>/videos/<user slug>/<task>_<instance_id>.mp4`."""
    from slugify import slugify

    return Path(results_dir) / team_slug / "videos" / slugify(user, separator="_") / f"{task}_{instance_id}.mp4"


TaskFilter = str | list[str] | None


class Server(BaseModel):
    """A team's policy server, as listed in `resources-raw.json`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535, strict=True)
    compatible_task: TaskFilter = None
    not_compatible_task: TaskFilter = None
    capacity: int = Field(default=1, ge=1, strict=True)
    """Episodes the server serves at once (ours; the original format has none)."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def serves(self, task: str) -> bool:
        """Whether this server may run `task`."""
        allowed = as_set(self.compatible_task)
        return (allowed is None or task in allowed) and task not in (as_set(self.not_compatible_task) or set())


def as_set(task_filter: TaskFilter) -> frozenset[str] | None:
    """A task filter (string, list or absent) as a set, or None when absent."""
    if task_filter is None:
        return None
    if isinstance(task_filter, str):
        return frozenset([task_filter])
    return frozenset(task_filter)


class Resources(RootModel[dict[str, list[Server]]]):
    """`resources.json`: pool name -> its servers."""

    def servers(self, pool: str) -> list[Server]:
        return self.root[pool]

    def capacity(self, pool: str) -> int:
        return sum(server.capacity for server in self.root[pool])

    @property
    def pools(self) -> list[str]:
        return list(self.root)

    def most_in_flight(self, prefetch: int) -> int:
        """Episodes a campaign may have in flight at once, each server with `prefetch` of them
        loading ahead (flows/campaign/dispatch.py): the runner slots it can use."""
        return sum(self.capacity(pool) + prefetch * len(servers) for pool, servers in self.root.items())


JobList = TypeAdapter(list[Job])
