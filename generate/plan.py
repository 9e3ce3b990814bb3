"""The campaign plan: ranked entrants x task instances x pools -> jobs, and what was left out.

Pure: everything read from disk comes in as arguments, so every rule is testable
without files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

from generate.instances import Instance
from generate.models import Job, JobPayload
from generate.resources import Pool, resources_json
from generate.submissions import Entrant, Ranking, team_slug

IsDone = Callable[[str, str, int], bool]
"""`is_done(team_slug, task, instance_id)`: whether the episode's result exists."""


def nothing_done(team_slug: str, task: str, instance_id: int) -> bool:
    return False


@dataclass(frozen=True)
class EntrantPlan:
    """An entrant's line in the summary."""

    entrant: Entrant
    tasks: list[str]
    """Tasks it gets jobs for (empty when not selected)."""
    jobs: int
    done: int
    """Instances skipped because their result exists."""


@dataclass(frozen=True)
class Unserved:
    """Jobs of one team and task that no pool of the team can serve."""

    team_slug: str
    task: str
    jobs: int

    def __str__(self) -> str:
        jobs = "1 job" if self.jobs == 1 else f"{self.jobs} jobs"
        return f"{self.team_slug}: no server compatible with task {self.task}; {jobs} not emitted"


@dataclass(frozen=True)
class Plan:
    entrants: list[EntrantPlan]
    pools: list[Pool]
    jobs: list[Job]
    unserved: list[Unserved]
    warnings: list[str]

    def why_no_jobs(self) -> str | None:
        """Why the plan holds no job (None when it holds some), for the summary's last words."""
        if self.jobs:
            return None
        selected = [row for row in self.entrants if row.entrant.selected]
        done = sum(row.done for row in selected)
        if not selected:
            return "no entrant is selected (--top-k 0?)"
        if done and not self.unserved:
            return f"all {done} episodes of the selected entrants already have results"
        if not any(row.tasks for row in selected):
            return "no selected entrant scored above 0 on a task (--all-tasks TEAM_SLUG gives it every task)"
        return "no selected entrant's task has both instances and a compatible server (see the warnings)"

    def jobs_per_pool(self) -> Counter[str]:
        """Pool name -> jobs that may run on it (a job may list several pools)."""
        return Counter(pool for job in self.jobs for pool in job.resource_types)

    def jobs_json(self) -> list[dict]:
        return [job.model_dump(mode="json") for job in self.jobs]

    def resources_json(self) -> dict[str, list[dict]]:
        return resources_json(self.pools)


def build_plan(
    ranking: Ranking,
    instances: dict[str, list[Instance]],
    pools: list[Pool],
    is_done: IsDone = nothing_done,
    all_tasks: Collection[str] = (),
) -> Plan:
    """Jobs for every selected entrant's tasks, ordered by track, rank, task, instance id."""
    team_pools: dict[str, list[Pool]] = {}
    for pool in pools:
        team_pools.setdefault(pool.team_slug, []).append(pool)
    rows: list[EntrantPlan] = []
    jobs: list[Job] = []
    unserved: list[Unserved] = []
    missing_tasks: dict[str, list[str]] = {}
    for entrant in ranking.entrants:
        if not entrant.selected:
            rows.append(EntrantPlan(entrant, tasks=[], jobs=0, done=0))
            continue
        tasks = entrant.tasks(all_tasks=entrant.team_slug in all_tasks)
        done = emitted = 0
        for task in tasks:
            if task not in instances:
                missing_tasks.setdefault(task, []).append(entrant.team_slug)
                continue
            todo = [i for i in instances[task] if not is_done(entrant.team_slug, task, i.instance_id)]
            done += len(instances[task]) - len(todo)
            serving = [pool.name for pool in team_pools.get(entrant.team_slug, []) if pool.serves(task)]
            if todo and not serving:
                unserved.append(Unserved(entrant.team_slug, task, len(todo)))
            elif todo:
                jobs += [make_job(entrant, instance, serving) for instance in todo]
                emitted += len(todo)
        rows.append(EntrantPlan(entrant, tasks=tasks, jobs=emitted, done=done))
    warnings = [
        *ranking.warnings,
        *_all_tasks_warnings(ranking, all_tasks),
        *(f"task {task}: no folder in the test instances; skipped for {', '.join(slugs)}" for task, slugs in sorted(missing_tasks.items())),
        *_unused_servers_warnings(ranking, team_pools),
        *map(str, unserved),
    ]
    return Plan(entrants=rows, pools=pools, jobs=jobs, unserved=unserved, warnings=warnings)


def make_job(entrant: Entrant, instance: Instance, pools: list[str]) -> Job:
    payload = JobPayload(
        team=entrant.team,
        team_slug=entrant.team_slug,
        track=entrant.track,
        task=instance.task,
        instance_id=instance.instance_id,
        instance_basename=instance.basename,
        instance_path=instance.path,
    )
    return Job(
        id=Job.make_id(entrant.team_slug, instance.task, instance.instance_id),
        payload=payload,
        resource_type=pools[0],
        resource_types=pools,
    )


def _all_tasks_warnings(ranking: Ranking, all_tasks: Collection[str]) -> list[str]:
    entrants = ranking.by_slug()
    warnings = []
    for slug in sorted(set(all_tasks)):
        if slug not in entrants:
            warnings.append(f"--all-tasks {slug}: no submission has this team slug")
        elif not entrants[slug].selected:
            warnings.append(f"--all-tasks {slug}: not in the top of its track; no jobs")
    return warnings


def _unused_servers_warnings(ranking: Ranking, team_pools: dict[str, list[Pool]]) -> list[str]:
    entrants = ranking.by_slug()
    warnings = []
    for slug in team_pools:
        if slug not in entrants:
            hint = f" (did you mean {team_slug(slug)}?)" if team_slug(slug) in entrants else ""
            warnings.append(f"resources-raw team {slug}: no submission has this team slug{hint}; its servers get no jobs")
    return warnings
