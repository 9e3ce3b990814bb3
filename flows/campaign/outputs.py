"""What a campaign tells people: the periodic stats line (any kind of job), and at the end
`failed.txt`, the team x task table artifact, the leaderboard artifact and the summary."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from prefect.artifacts import acreate_table_artifact

from flows.campaign.dispatch import Dispatcher
from flows.campaign.kinds import JobKind
from flows.campaign.outcomes import Tally
from flows.campaign.settings import CampaignSettings
from flows.naming import artifact_key, leaderboard_artifact_key
from flows.runtime.liveness import PoolService
from generate.jsonio import write_atomic
from generate.models import Job, Resources


async def stats_line(client, tally: Tally, dispatcher: Dispatcher, kind: JobKind, paused: bool,
                     service: PoolService | None = None) -> str:
    """`done 12/48 | failed 0 | retried 1 | pending 20 | pools a_1 1/1 (2 in flight) ...` (the
    pools as the jobs' kind shows them), and a warning when nothing serves the jobs' work pool
    (`service`, the campaign's last reading)."""
    pools, warnings = await kind.stats(client, dispatcher)
    state = " | PAUSED" if paused else (" | stopped at threshold" if dispatcher.stopped else "")
    if service is not None and not service.served:
        warnings.insert(0, service.note())
    return (
        f"done {tally.already_done + tally.done}/{tally.total} | failed {len(tally.failures)} | "
        f"retried {tally.retried} | pending {dispatcher.pending}{state} | " + ", ".join(pools)
        + "".join(f" | WARNING {warning}" for warning in warnings)
    )


async def publish_leaderboard(results_dir: Path, settings: CampaignSettings) -> dict:
    """The leaderboard of `success` over all the campaign's jobs (not only those of an `--only`
    run) as a markdown artifact; returns it as JSON."""
    from prefect.artifacts import acreate_markdown_artifact

    from flows.results.leaderboard import to_markdown
    from flows.results.metrics_files import board_from_results
    from generate.jsonio import read_model
    from generate.models import JobList

    board = board_from_results(results_dir, "success", read_model(settings.jobs_file, JobList))
    await acreate_markdown_artifact(
        markdown=to_markdown(board), key=leaderboard_artifact_key(settings.name),
        description=f"Campaign {settings.name}: leaderboard of {board.metric}",
    )
    return board.model_dump(mode="json")


def team_task_table(jobs: list[Job], tally: Tally, results_dir: Path) -> list[dict]:
    """Rows of team, task, done, failed, cancelled, total: the campaign's result at a glance."""
    rows: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for job in jobs:
        key = (job.payload.team_slug, job.payload.task)
        rows[key]["total"] += 1
        if job.id in tally.failures:
            rows[key]["failed"] += 1
        elif job.id in tally.cancelled:
            rows[key]["cancelled"] += 1
        elif job.metrics_path(results_dir).exists():
            rows[key]["done"] += 1
    return [
        {"team": team, "task": task, "done": c["done"], "failed": c["failed"], "cancelled": c["cancelled"], "total": c["total"]}
        for (team, task), c in sorted(rows.items())
    ]


def utilization(tally: Tally, resources: Resources, wall_seconds: float) -> dict[str, float]:
    """Per pool: seconds its servers were held / (capacity x campaign wall time)."""
    return {
        pool: round(tally.held_seconds.get(pool, 0.0) / (resources.capacity(pool) * wall_seconds), 3)
        if wall_seconds > 0 else 0.0
        for pool in resources.pools
    }


FAILED_FILE = "failed.txt"


def write_failed_file(results_dir: Path, job_ids, name: str = FAILED_FILE) -> Path:
    """`<results_dir>/failed.txt`: the failed (not cancelled) job ids, one a line, sorted,
    written atomically (`--only` reads it back; a batch's `failed_items.txt`, `--items`).
    Written by the campaign when it ends and by `evalq campaign report --write-failed` from the
    server's truth afterwards."""
    failed_file = Path(results_dir) / name
    write_atomic(failed_file, "".join(f"{job_id}\n" for job_id in sorted(job_ids)))
    return failed_file


async def finish_report(client, tally: Tally, jobs: list[Job], resources: Resources, settings: CampaignSettings, wall: float) -> dict:
    """Write failed.txt (failed, not cancelled, job ids), publish the table and leaderboard
    artifacts, and return the summary."""
    results_dir = Path(settings.results_dir)
    failed_file = write_failed_file(results_dir, tally.failures)
    table = team_task_table(jobs, tally, results_dir)
    await acreate_table_artifact(
        table=table,
        key=artifact_key(settings.name),
        description=f"Campaign {settings.name}: {tally.already_done + tally.done}/{tally.total} done, "
        f"{len(tally.failures)} failed, {len(tally.cancelled)} cancelled",
    )
    leaderboard = await publish_leaderboard(results_dir, settings)
    return {
        "campaign": settings.name,
        **tally_summary(tally, wall, results_dir, failed_file),
        "utilization": utilization(tally, resources, wall),
        "table": table,
        "leaderboard": leaderboard,
    }


def tally_summary(tally: Tally, wall: float, results_dir: Path, failed_file: Path) -> dict:
    """The totals of a campaign's (or batch's) summary: what the command line's tables show."""
    return {
        "total": tally.total,
        "done": tally.done,
        "already_done": tally.already_done,
        "failed": dict(sorted(tally.failures.items())),
        "cancelled": dict(sorted(tally.cancelled.items())),
        "retried": tally.retried,
        "fresh_attempts": tally.fresh_attempts,
        "wall_seconds": round(wall, 1),
        "results_dir": str(Path(results_dir).resolve()),
        "failed_file": str(Path(failed_file).resolve()),
    }
