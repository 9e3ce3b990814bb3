"""Terminal output of campaigns and batches: a progress bar while running, tables at the end."""

from __future__ import annotations

import contextlib
import datetime as dt
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from flows.slots.pool_status import PoolStatus

console = Console(stderr=True)


def progress_detail(tally, dispatcher) -> str:
    return (f"failed {len(tally.failures)} | cancelled {len(tally.cancelled)} | in flight {dispatcher.total_in_flight} "
            f"| retried {tally.retried}")


@contextlib.contextmanager
def campaign_progress(stats_interval: float = 60.0, noun: str = "episodes"):
    """A progress bar fed by the campaign's progress hook; where the console is no terminal (a
    log file, a pipe), a plain line every `stats_interval` seconds and one at the end instead."""
    from flows.campaign.loop import (
        PROGRESS_HOOKS,  # Prefect: imported once a command runs a campaign
    )

    if not console.is_terminal:
        hook = PlainProgress(stats_interval, noun=noun)
        PROGRESS_HOOKS.append(hook)
        try:
            yield None
        finally:
            PROGRESS_HOOKS.remove(hook)
            hook.flush()
        return
    progress = Progress(
        TextColumn(f"[bold]{noun}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("episodes", total=None, detail="")

    def hook(tally, dispatcher) -> None:
        progress.update(task, total=tally.total, completed=tally.finished, detail=progress_detail(tally, dispatcher))

    PROGRESS_HOOKS.append(hook)
    try:
        with progress:
            yield progress
    finally:
        PROGRESS_HOOKS.remove(hook)


class PlainProgress:
    """The progress bar as plain lines: `episodes 12/44 | failed 0 | ... | 0:01:05 elapsed`,
    at most one per interval (the first tick's at once), and the last state at the end."""

    def __init__(self, interval: float, clock=time.monotonic, noun: str = "episodes"):
        self.interval = interval
        self.noun = noun
        self.clock = clock
        self.started = clock()
        self.printed_at: float | None = None
        self.line: str | None = None
        self.printed: str | None = None

    def __call__(self, tally, dispatcher) -> None:
        elapsed = dt.timedelta(seconds=int(self.clock() - self.started))
        self.line = f"{self.noun} {tally.finished}/{tally.total} | {progress_detail(tally, dispatcher)} | {elapsed} elapsed"
        if self.printed_at is None or self.clock() - self.printed_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.line is not None and self.line != self.printed:
            console.print(self.line, markup=False, highlight=False, soft_wrap=True)
            self.printed, self.printed_at = self.line, self.clock()


def summary_tables(summary: dict) -> list[Table]:
    totals = totals_table(f"Campaign {summary['campaign']}", "episodes", "failed job ids", summary)
    pools = Table(title="Pool utilization (held time / capacity x wall time)")
    pools.add_column("pool")
    pools.add_column("utilization", justify="right")
    for pool, share in summary["utilization"].items():
        pools.add_row(pool, f"{share:.0%}")
    return [totals, pools, *failed_table("Failed episodes", "job", summary)]


def batch_summary_tables(summary: dict) -> list[Table]:
    totals = totals_table(f"Batch {summary['batch']} (work pool {summary['pool']})", "items", "failed item ids", summary)
    if summary.get("purge_at"):
        totals.add_row("runs dropped at (--keep-for)", summary["purge_at"])
    return [totals, *failed_table("Failed items", "item", summary)]


def totals_table(title: str, noun: str, failed_file: str, summary: dict) -> Table:
    """A campaign's (or batch's) totals from its summary (`flows/campaign/outputs.py`, `tally_summary`)."""
    totals = Table(title=title, show_header=False)
    totals.add_row(noun, str(summary["total"]))
    totals.add_row("done now / before", f"{summary['done']} / {summary['already_done']}")
    totals.add_row("failed", f"[red]{len(summary['failed'])}[/]" if summary["failed"] else "0")
    totals.add_row("cancelled (not retried)", str(len(summary.get("cancelled", {}))))
    totals.add_row("requeued attempts", str(summary["retried"]))
    if summary.get("fresh_attempts"):
        totals.add_row("failed before, new attempts", str(summary["fresh_attempts"]))
    totals.add_row("wall time", f"{summary['wall_seconds']} s")
    totals.add_row("results", summary["results_dir"])
    totals.add_row(failed_file, summary["failed_file"])
    return totals


def failed_table(title: str, column: str, summary: dict) -> list[Table]:
    """The failed jobs with their last state, if any failed."""
    if not summary["failed"]:
        return []
    failed = Table(title=title)
    failed.add_column(column, no_wrap=True)
    failed.add_column("last state", overflow="fold")  # wrapped whole: a cut reason hides the cause
    for job_id, reason in summary["failed"].items():
        failed.add_row(job_id, reason)
    return [failed]


def pool_status_table(pools: list[PoolStatus]) -> Table:
    import time

    from flows.slots.quarantine_policy import quarantine_note

    table = Table(title="Policy-server pools")
    for column in ("pool", "server", "busy / capacity", "holders", "health"):
        table.add_column(column)
    for pool in pools:
        health = "[bold red]no live server: episodes wait" if pool.all_quarantined else ""
        table.add_row(f"[bold]{pool.name}", "", f"{pool.busy}/{pool.capacity}", "", health)
        for server in pool.servers:
            holders = ", ".join(f"{h.job_id} (since {h.since:%H:%M:%S})" for h in server.holders) or "-"
            health = f"[red]{quarantine_note(server.quarantine, time.time())}" if server.quarantine else "ok"
            table.add_row("", server.address, f"{server.busy}/{server.capacity}", holders, health)
    return table


def pool_warnings_text(pools: list[PoolStatus]) -> list[str]:
    """A line per pool whose servers are all quarantined."""
    return [f"WARNING: pool {pool.name}: all {len(pool.servers)} servers quarantined; its episodes wait until a probe "
            f"finds one back" for pool in pools if pool.all_quarantined]
