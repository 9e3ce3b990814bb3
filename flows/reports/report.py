"""`evalq campaign report`: what happened to a campaign's episodes, grouped. Pure.

From the campaign's episode runs (`history.EpisodeRecord`), the jobs whose metrics exist and
which servers each run held: jobs done / failed / cancelled / in flight / waiting, attempts and
retries apart, failures grouped by reason (distinct messages, counts, example job ids), what
failed on each pool and server (every failed attempt, also those of a run rerun in place from
the Prefect UI), and the ids to resubmit.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
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
    dispatching: bool = False
    """The campaign flow itself runs (it writes failed.txt when it ends)."""
    planned: int | None
    """Jobs in the campaign's latest plan (its Prefect variable), when known."""
    runs: int
    """Episode flow runs."""
    attempts: int = 0
    """Times episodes ran: one per run, one more per rerun in place (the Prefect UI's Retry)."""
    retries: int = 0
    """Attempts beyond each job's first."""
    done: int
    """Jobs (every count below counts jobs, by their latest run)."""
    failed: int
    cancelled: int
    in_flight: int
    waiting: int | None = None
    """Planned jobs with no run yet (None without a plan)."""
    results_dir: str | None = None
    """Where the runs were told to write (the latest run's `results_dir`)."""
    reasons: list[ReasonGroup]
    """Why the failed jobs' last attempts failed, most frequent first."""
    pools: list[PlaceFailures]
    servers: list[PlaceFailures]
    resubmit: list[str]
    """Failed job ids: `--only` input."""
    cancelled_ids: list[str]
    """Cancelled by someone: not retried automatically; `--only` brings them back."""
    in_flight_ids: list[str]


def short_reason(record: EpisodeRecord | FailedAttempt) -> str:
    reason = record.reason.strip()
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 3] + "..."


def group_reasons(records: Iterable[EpisodeRecord | FailedAttempt]) -> list[ReasonGroup]:
    """Distinct reasons with their counts and example job ids, most frequent first."""
    jobs: dict[str, list[str]] = defaultdict(list)
    for record in records:
        jobs[short_reason(record)].append(record.job_id)
    groups = [ReasonGroup(reason=reason, count=len(ids), examples=sorted(set(ids))[:EXAMPLES]) for reason, ids in jobs.items()]
    return sorted(groups, key=lambda g: (-g.count, g.reason))


@dataclass(frozen=True)
class FailedAttempt:
    """One failed attempt of a job: its run, pool, why, and the server it held then."""

    job_id: str
    run_id: str
    pool: str
    reason: str
    server: str | None


def server_at(acquired: list[tuple[dt.datetime | None, str]], started: dt.datetime | None, ended: dt.datetime | None) -> str | None:
    """The server a run held last in one attempt (`started`..`ended`), from its slot leases
    (time, address) in time order; the last lease when the times are unknown."""
    held = [address for at, address in acquired
            if at is None or ((started is None or at >= started) and (ended is None or at <= ended))]
    return held[-1] if held else None


def failed_attempts(records: Iterable[EpisodeRecord], servers: dict[str, list[tuple[dt.datetime | None, str]]]) -> list[FailedAttempt]:
    """Every failed attempt of every run (a run rerun in place may have several)."""
    found = []
    for record in records:
        for end in record.failures:
            server = server_at(servers.get(record.run_id, []), end.started, end.at if record.ends else None)
            found.append(FailedAttempt(record.job_id, record.run_id, record.pool, end.reason, server))
    return found


def failures_by(attempts: Iterable[FailedAttempt], place_of) -> list[PlaceFailures]:
    """Failed attempts grouped by `place_of(attempt)` (a pool or server; None: unknown, skipped)."""
    places: dict[str, list[FailedAttempt]] = defaultdict(list)
    for attempt in attempts:
        place = place_of(attempt)
        if place:
            places[place].append(attempt)
    result = [
        PlaceFailures(name=name, failed_attempts=len(group), jobs=sorted({r.job_id for r in group}), reasons=group_reasons(group))
        for name, group in places.items()
    ]
    return sorted(result, key=lambda p: (-p.failed_attempts, p.name))


def build_report(
    campaign: str,
    records: list[EpisodeRecord],
    done_ids: set[str],
    servers: dict[str, list[tuple[dt.datetime | None, str]]],
    campaign_running: bool = False,
    planned: int | None = None,
) -> CampaignReport:
    """`done_ids`: jobs whose metrics exist; `servers`: run id -> the servers it leased (time,
    address), in time order."""
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
    attempts = failed_attempts(records, servers)
    tries = sum(record.attempts for record in records)
    latest_runs = [r for r in records if r.results_dir]
    return CampaignReport(
        campaign=campaign,
        running=campaign_running or bool(in_flight),
        dispatching=campaign_running,
        planned=planned,
        runs=len(records),
        attempts=tries,
        retries=tries - len(latest),
        done=len(done),
        failed=len(failed),
        cancelled=len(cancelled),
        in_flight=len(in_flight),
        waiting=max(0, planned - len(latest)) if planned is not None else None,
        results_dir=max(latest_runs, key=lambda r: (r.created is not None, r.created or dt.datetime.min)).results_dir if latest_runs else None,
        reasons=group_reasons(latest[job_id] for job_id in failed),
        pools=failures_by(attempts, lambda a: a.pool),
        servers=failures_by(attempts, lambda a: a.server),
        resubmit=failed,
        cancelled_ids=cancelled,
        in_flight_ids=in_flight,
    )


def report_text(report: CampaignReport) -> str:
    """The report as plain text for a terminal."""
    planned = f", {report.waiting} waiting, of {report.planned} planned" if report.planned is not None else ""
    state = "running" if report.running else "not running"
    reruns = report.attempts - report.runs
    lines = [
        f"Campaign {report.campaign} ({state}): episodes {report.done} done, {report.failed} failed, "
        f"{report.cancelled} cancelled, {report.in_flight} in flight{planned}; "
        f"{report.attempts} attempts ({report.retries} retries) in {report.runs} episode runs"
        + (f", {reruns} of them reruns in place" if reruns else ""),
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
