"""`evalq batch report B --report-dir DIR`: the batch submitter's report folder, from the server's truth.

It writes, each file atomically:
- `summary.md`: the items by their latest run (done, failed, cancelled, in flight, waiting),
  attempts and retries, the durations of the done items' runs, the failures grouped by reason
  (the campaign's report, `flows/reports/report.py`, with each item's own id in its message
  read as `{item}`), and the failed and cancelled items;
- `failed/<item>.log`: per failed item, its run, attempt, state and message, and the last 200
  lines of its run's log (a failed item's file of an earlier report goes once it is not failed);
- `failed_items.txt`: the failed items, one id a line: an item list for `evalq batch run --items`
  (the submitter's `unique_fail_aoi_names.txt`).
Reading is `gather_batch_report` (the runs, their histories, the failed runs' logs); the rest is pure.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel
from slugify import slugify

from flows.batch.items import FAILED_ITEMS_FILE, item_problem
from flows.campaign.history import EpisodeRecord, latest_attempts
from flows.reports.report import CampaignReport, ReasonGroup, group_reasons
from generate.jsonio import write_atomic

LOG_LINES = 200
FAILED_FOLDER = "failed"


class Durations(BaseModel):
    """Seconds the done items' completed runs ran (start to end), over `count` items."""

    count: int = 0
    total: float = 0.0
    mean: float | None = None
    median: float | None = None
    longest: float | None = None
    longest_item: str | None = None


class FailedItem(BaseModel):
    item: str
    run_id: str
    attempt: int
    state: str
    message: str
    ended: dt.datetime | None
    log: str
    """Its file in the report folder (relative)."""
    log_lines: list[str] = []


class BatchReport(BaseModel):
    batch: str
    report: CampaignReport
    """Counts, failures by reason, ids to resubmit (`report.resubmit`): the campaign's report."""
    durations: Durations
    failed_items: list[FailedItem]


def durations_of(records: list[EpisodeRecord], done: list[str]) -> Durations:
    """The durations of each done item's latest completed run."""
    wanted = set(done)
    completed = latest_attempts(r for r in records if r.job_id in wanted and r.state_type is not None
                                and r.state_type.value == "COMPLETED" and r.start_time and r.end_time)
    seconds = {item: (r.end_time - r.start_time).total_seconds() for item, r in completed.items()}
    if not seconds:
        return Durations()
    longest = max(seconds, key=seconds.get)
    return Durations(count=len(seconds), total=round(sum(seconds.values()), 1), mean=round(statistics.fmean(seconds.values()), 1),
                     median=round(statistics.median(seconds.values()), 1), longest=round(seconds[longest], 1), longest_item=longest)


def log_name(item: str) -> str:
    """A failed item's log file name: the item id as it is when it is a valid one (ids read back
    from run names may be anything, such as a campaign's `team/task/0`), else its slug."""
    return item if item_problem(item) is None else (slugify(item) or "item")


def failed_items(report: CampaignReport, records: list[EpisodeRecord]) -> list[FailedItem]:
    """The failed items, each by its latest run (the one whose log the report shows)."""
    latest = latest_attempts(records)
    return [FailedItem(item=item, run_id=latest[item].run_id, attempt=latest[item].attempt, state=latest[item].state_name,
                       message=latest[item].message, ended=latest[item].end_time, log=f"{FAILED_FOLDER}/{log_name(item)}.log")
            for item in report.resubmit]


def failed_item_text(failed: FailedItem) -> str:
    lines = [f"item:    {failed.item}", f"run:     {failed.run_id} (attempt {failed.attempt})",
             f"state:   {failed.state}", f"message: {failed.message}",
             f"ended:   {failed.ended:%Y-%m-%d %H:%M:%S} UTC" if failed.ended else "ended:   -", "",
             f"--- the last {len(failed.log_lines)} lines of its log ---", *failed.log_lines]
    return "\n".join(lines) + "\n"


def summary_markdown(batch: BatchReport) -> str:
    report, took = batch.report, batch.durations
    waiting = "-" if report.waiting is None else str(report.waiting)
    lines = [
        f"# Batch {batch.batch}", "",
        f"{'Running' if report.running else 'Not running'}; {report.runs} runs, {report.attempts} attempts "
        f"({report.retries} retries).", "",
        "| items | done | failed | cancelled | in flight | waiting |", "| --- | --- | --- | --- | --- | --- |",
        f"| {report.planned if report.planned is not None else '-'} | {report.done} | {report.failed} | {report.cancelled} "
        f"| {report.in_flight} | {waiting} |", "",
        "## Durations (done items, start to end of their completed run)", "",
    ]
    if took.count:
        lines += [f"{took.count} items: {took.total:g} s in all, mean {took.mean:g} s, median {took.median:g} s, "
                  f"longest {took.longest:g} s (`{took.longest_item}`)."]
    else:
        lines += ["No item done yet."]
    if report.reasons:
        lines += ["", "## Failures by reason (last attempt)", "", "| items | reason | e.g. |", "| --- | --- | --- |"]
        lines += [f"| {g.count} | {escape(g.reason)} | {', '.join(f'`{e}`' for e in g.examples)} |" for g in report.reasons]
    if batch.failed_items:
        lines += ["", f"## Failed items ({len(batch.failed_items)}; their ids in `{FAILED_ITEMS_FILE}`)", ""]
        lines += [f"- [`{f.item}`]({f.log}): {escape(f.state)}: {escape(f.message)}" for f in batch.failed_items]
        lines += ["", f"Run them again: `evalq batch run --name <new name> --items {FAILED_ITEMS_FILE} ...` "
                  "(or the same `--name`: failed items get new attempts)."]
    if report.cancelled_ids:
        lines += ["", "## Cancelled items (not retried)", ""] + [f"- `{item}`" for item in report.cancelled_ids]
    if report.in_flight_ids:
        lines += ["", "## In flight", ""] + [f"- `{item}`" for item in report.in_flight_ids]
    return "\n".join(lines) + "\n"


def escape(text: str) -> str:
    """Text in a markdown table cell or list item: one line, no column breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def write_report_folder(batch: BatchReport, folder: Path) -> list[Path]:
    """The report folder (see the module); the files written."""
    failed_dir = folder / FAILED_FOLDER
    failed_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for failed in batch.failed_items:
        write_atomic(folder / failed.log, failed_item_text(failed))
        written.append(folder / failed.log)
    current = {folder / failed.log for failed in batch.failed_items}
    for stale in failed_dir.glob("*.log"):
        if stale not in current:
            stale.unlink(missing_ok=True)
    write_atomic(folder / FAILED_ITEMS_FILE, "".join(f"{item}\n" for item in batch.report.resubmit))
    write_atomic(folder / "summary.md", summary_markdown(batch))
    return written + [folder / FAILED_ITEMS_FILE, folder / "summary.md"]


async def last_log_lines(client, run_id: str, most: int = LOG_LINES) -> list[str]:
    """The last `most` log lines of a flow run, oldest first, as `HH:MM:SS.mmm LEVEL message`."""
    import logging
    from uuid import UUID

    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])),
                                  limit=most, sort=LogSort.TIMESTAMP_DESC)
    return [f"{log.timestamp:%H:%M:%S.%f}"[:-3] + f" {logging.getLevelName(log.level):<7} {log.message}" for log in reversed(logs)]


async def gather_batch_report(client, batch: str) -> BatchReport:
    """The batch's report from its runs (`flows/reports/runs.py`) and its failed runs' logs."""
    from flows.reports.runs import gather_report_and_records

    report, records = await gather_report_and_records(client, batch, slots=False)
    report.reasons = reasons_of_items(report, records)
    failed = failed_items(report, records)
    for item in failed:
        item.log_lines = await last_log_lines(client, item.run_id)
    return BatchReport(batch=batch, report=report, durations=durations_of(records, report_done(report, records)), failed_items=failed)


def reasons_of_items(report: CampaignReport, records: list[EpisodeRecord]) -> list[ReasonGroup]:
    """The failed items' reasons grouped with their own ids written `{item}`: a pipeline that
    names its item in every message fails for one reason, not one per item."""
    latest = latest_attempts(records)
    return group_reasons(replace(latest[item], message=latest[item].message.replace(item, "{item}")) for item in report.resubmit)


def report_done(report: CampaignReport, records: list[EpisodeRecord]) -> list[str]:
    """The done items: every item not failed, cancelled or in flight."""
    settled = set(report.resubmit) | set(report.cancelled_ids) | set(report.in_flight_ids)
    return sorted({r.job_id for r in records} - settled)
