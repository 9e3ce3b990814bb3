"""`evalq campaign report`: what happened to a campaign's episodes, grouped. Pure.

From the campaign's episode runs (`history.EpisodeRecord`), the jobs whose metrics exist and
which server each failed run held: done / failed / cancelled / in flight, failures grouped by
reason (distinct messages, counts, example job ids), what failed on each pool and server, and
the ids to resubmit.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from prefect.client.schemas.objects import StateType
from pydantic import BaseModel

from flows.campaign.history import EpisodeRecord, latest_attempts

EXAMPLES = 3
REASON_CHARS = 300
"""Longer messages (tracebacks) are cut: the start tells them apart."""


class ReasonGroup(BaseModel):
    reason: str
    count: int
    examples: list[str]
    """A few job ids that ended so."""


class PlaceFailures(BaseModel):
    """The failed attempts on one pool or policy server (retried ones too)."""

    name: str
    failed_attempts: int
    jobs: list[str]
    reasons: list[ReasonGroup]


class CampaignReport(BaseModel):
    campaign: str
    running: bool
    """The campaign flow runs, or episodes are in flight."""
    planned: int | None
    """Jobs in the campaign's latest plan (its Prefect variable), when known."""
    runs: int
    """Episode flow runs (all attempts)."""
    done: int
    failed: int
    cancelled: int
    in_flight: int
    reasons: list[ReasonGroup]
    """Why the failed jobs' last attempts failed, most frequent first."""
    pools: list[PlaceFailures]
    servers: list[PlaceFailures]
    resubmit: list[str]
    """Failed job ids: `--only` input."""
    cancelled_ids: list[str]
    """Cancelled by someone: not retried automatically; `--only` brings them back."""
    in_flight_ids: list[str]


def short_reason(record: EpisodeRecord) -> str:
    reason = record.reason.strip()
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 3] + "..."


def group_reasons(records: Iterable[EpisodeRecord]) -> list[ReasonGroup]:
    """Distinct reasons with their counts and example job ids, most frequent first."""
    jobs: dict[str, list[str]] = defaultdict(list)
    for record in records:
        jobs[short_reason(record)].append(record.job_id)
    groups = [ReasonGroup(reason=reason, count=len(ids), examples=sorted(set(ids))[:EXAMPLES]) for reason, ids in jobs.items()]
    return sorted(groups, key=lambda g: (-g.count, g.reason))


def failures_by(records: Iterable[EpisodeRecord], place_of) -> list[PlaceFailures]:
    """Failed attempts grouped by `place_of(record)` (a pool or server; None: unknown, skipped)."""
    places: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in records:
        place = place_of(record)
        if place:
            places[place].append(record)
    result = [
        PlaceFailures(name=name, failed_attempts=len(group), jobs=sorted({r.job_id for r in group}), reasons=group_reasons(group))
        for name, group in places.items()
    ]
    return sorted(result, key=lambda p: (-p.failed_attempts, p.name))


def failed_attempt(record: EpisodeRecord) -> bool:
    return record.state_type in (StateType.FAILED, StateType.CRASHED) and not record.cancelled


def build_report(
    campaign: str,
    records: list[EpisodeRecord],
    done_ids: set[str],
    servers: dict[str, str],
    campaign_running: bool = False,
    planned: int | None = None,
) -> CampaignReport:
    """`done_ids`: jobs whose metrics exist; `servers`: run id -> the server it held."""
    latest = latest_attempts(records)
    done, failed, cancelled, in_flight = [], [], [], []
    for job_id, record in sorted(latest.items()):
        if job_id in done_ids or record.state_type == StateType.COMPLETED:
            done.append(job_id)
        elif not record.final:
            in_flight.append(job_id)
        elif record.cancelled:
            cancelled.append(job_id)
        else:
            failed.append(job_id)
    failed_runs = [r for r in records if failed_attempt(r)]
    return CampaignReport(
        campaign=campaign,
        running=campaign_running or bool(in_flight),
        planned=planned,
        runs=len(records),
        done=len(done),
        failed=len(failed),
        cancelled=len(cancelled),
        in_flight=len(in_flight),
        reasons=group_reasons(latest[job_id] for job_id in failed),
        pools=failures_by(failed_runs, lambda r: r.pool),
        servers=failures_by(failed_runs, lambda r: servers.get(r.run_id)),
        resubmit=failed,
        cancelled_ids=cancelled,
        in_flight_ids=in_flight,
    )


def report_text(report: CampaignReport) -> str:
    """The report as plain text for a terminal."""
    planned = f" of {report.planned} planned" if report.planned is not None else ""
    state = "running" if report.running else "not running"
    lines = [
        f"Campaign {report.campaign} ({state}): {report.done} done, {report.failed} failed, "
        f"{report.cancelled} cancelled, {report.in_flight} in flight{planned}; {report.runs} episode runs",
    ]
    if report.reasons:
        lines += ["", "Failures by reason (last attempt):"]
        lines += [f"  {g.count:>5}  {g.reason}\n         e.g. {', '.join(g.examples)}" for g in report.reasons]
    for title, places in (("pool", report.pools), ("server", report.servers)):
        if places:
            lines += ["", f"Failed attempts per {title}:"]
            for place in places:
                lines.append(f"  {place.name}: {place.failed_attempts} failed attempts, {len(place.jobs)} jobs")
                lines += [f"    {g.count:>5}  {g.reason}" for g in place.reasons]
    if report.cancelled_ids:
        lines += ["", "Cancelled (not retried; rerun with --only):"] + [f"  {job_id}" for job_id in report.cancelled_ids]
    if report.resubmit:
        lines += ["", "To resubmit (evalq campaign run ... --only FILE):"] + [f"  {job_id}" for job_id in report.resubmit]
    return "\n".join(lines) + "\n"
