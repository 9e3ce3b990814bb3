"""Pools panel: per pool and server, busy/capacity, holders, waiting episodes, history."""

from __future__ import annotations

from datetime import datetime, timedelta

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from flows.slots.quarantine_policy import QuarantineRecord
from tui.aggregate import History, duration, sparkline
from tui.models import PoolsSnapshot, ServerStatus

SPARK_WIDTH = 12
LEGEND = "Marks: ✓ answers  ⚠ failed a connection lately  ⛔ quarantined (no new leases)"


def usage_bar(busy: int, capacity: int, width: int = 6) -> Text:
    filled = round(width * busy / capacity) if capacity else 0
    style = "red" if capacity and busy >= capacity else "green"
    text = Text(f"{busy}/{capacity} ".rjust(6))
    text.append("█" * filled, style=style)
    text.append("░" * (width - filled), style="bright_black")
    return text


class PoolsPanel(Vertical):
    """Renders `PoolsSnapshot`s; utilization history comes from the app's `History`."""

    def compose(self) -> ComposeResult:
        yield Static("Pools", id="pools-title", classes="table-title")
        yield DataTable(id="pool-table", cursor_type="row", zebra_stripes=True)
        yield Static(LEGEND, id="pools-legend")

    def clear(self) -> None:
        self.query_one("#pools-title", Static).update("Pools")
        self.query_one("#pool-table", DataTable).clear()

    def on_mount(self) -> None:
        table = self.query_one("#pool-table", DataTable)
        for label, key in (("", "ok"), ("Pool / server", "name"), ("Busy", "busy"), ("Wait", "waiting"),
                           ("Utilization", "history"), ("Held by · since", "holder")):
            table.add_column(label, key=key)

    def show_pools(self, snapshot: PoolsSnapshot, history: History) -> None:
        now = snapshot.taken_at or datetime.now().astimezone()
        flagged = sum(1 for pool in snapshot.pools for server in pool.servers if server.unreachable_since)
        busy = sum(p.busy for p in snapshot.pools)
        capacity = sum(p.capacity for p in snapshot.pools)
        title = f"{len(snapshot.pools)} pools, {busy}/{capacity} slots busy"
        if flagged:
            title += f", {flagged} server(s) failing connections"
        title += quarantine_title(snapshot)
        self.query_one("#pools-title", Static).update(title)
        table = self.query_one("#pool-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for pool in snapshot.pools:
            table.add_row(
                Text("⛔", style="bold red") if pool.all_quarantined else "", Text(pool.name, style="bold"), usage_bar(pool.busy, pool.capacity),
                Text(str(pool.waiting), style="magenta" if pool.waiting else ""),
                Text(sparkline(history.get(f"pool:{pool.name}"), SPARK_WIDTH), style="cyan"), "", key=f"pool:{pool.name}",
            )
            for server in pool.servers:
                table.add_row(
                    server_mark(server),
                    f"  {server.address}", usage_bar(server.busy, server.capacity), "",
                    Text(sparkline(history.get(f"server:{server.address}"), SPARK_WIDTH), style="cyan"),
                    holder_text(server, now), key=f"server:{server.address}",
                )
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)


def holder_text(server: ServerStatus, now: datetime) -> Text:
    """`job · 4m 10s` for the oldest holder (`+n` more), then the connection failure if any."""
    text = Text()
    if server.holders:
        first = server.holders[0]
        text.append(first.job_id)
        if len(server.holders) > 1:
            text.append(f" +{len(server.holders) - 1}")
        text.append(f" · {duration(now - first.since)}", style="bright_black")
    if server.quarantine:
        text.append(("  " if text else "") + quarantine_text(server.quarantine, now), style="bold red")
    elif server.unreachable_since:
        text.append(("  " if text else "") + f"unreachable {duration(now - server.unreachable_since)} ago", style="bold red")
    return text


def server_mark(server: ServerStatus) -> Text:
    if server.quarantine:
        return Text("⛔", style="bold red")
    return Text("⚠", style="bold red") if server.unreachable_since else Text("✓", style="green")


def quarantine_text(record: QuarantineRecord, now: datetime) -> str:
    """`quarantined · probe in 8s: cannot connect ...` (`until` 0: no record, limit at 0)."""
    if not record.until:
        return "quarantined"
    left = record.until - now.timestamp()
    probe = f"probe in {duration(timedelta(seconds=left))}" if left > 0 else "probe due"
    return f"quarantined · {probe}: {record.reason}"[:80]


def quarantine_title(snapshot: PoolsSnapshot) -> str:
    """`, pool X: no live server, episodes wait` or `, 2 server(s) quarantined`."""
    down = [pool.name for pool in snapshot.pools if pool.all_quarantined]
    if down:
        return f", no live server in {', '.join(down)}: its episodes wait"
    sick = sum(1 for pool in snapshot.pools for server in pool.servers if server.quarantine)
    return f", {sick} server(s) quarantined" if sick else ""


def record_history(history: History, snapshot: PoolsSnapshot) -> None:
    """Add one utilization sample per pool and server."""
    for pool in snapshot.pools:
        history.add(f"pool:{pool.name}", pool.busy, pool.capacity)
        for server in pool.servers:
            history.add(f"server:{server.address}", server.busy, server.capacity)
