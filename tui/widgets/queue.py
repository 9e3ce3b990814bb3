"""Queue panel: counts by state, progress with rate and ETA, team x task table, episodes."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, ProgressBar, Static

from tui.aggregate import Throughput, duration
from tui.messages import EpisodeSelected, PageRequested, RowSelected
from tui.models import ACTIVE_BUCKETS, BUCKET_LABELS, EpisodesPage, QueueSnapshot, RowsPage
from tui.widgets.styles import STATE_STYLES, state_text


def counts_text(snapshot: QueueSnapshot | None) -> Text:
    """The episodes (jobs, by their latest run) by where they are; then those in flight by
    phase, and the attempts apart."""
    if snapshot is None:
        return Text("No evalq campaign found yet: waiting for episodes…", style="italic")
    counts = snapshot.counts
    text = Text()
    parts = [(counts.get("completed", 0), "done", "completed"), (counts.get("failed", 0) + counts.get("crashed", 0), "failed", "failed"),
             (counts.get("cancelled", 0), "cancelled", "cancelled"), (snapshot.in_flight, "in flight", "running"),
             (snapshot.to_dispatch, "to dispatch", "scheduled")]
    for index, (n, label, style) in enumerate(parts):
        text.append("  " if index else "")
        text.append(f"{n:,}", style=f"bold {STATE_STYLES[style]}")
        text.append(f" {label}")
    text.append("\nin flight:", style="dim")
    for bucket in ACTIVE_BUCKETS:
        text.append(f" {counts.get(bucket, 0):,}", style=STATE_STYLES[bucket])
        text.append(f" {BUCKET_LABELS[bucket]}")
    notes = [f"{snapshot.retries:,} retries"] + [f"{n:,} {what}" for n, what in ((counts.get("crashed", 0), "crashed"),
                                                                                  (snapshot.skipped, "skipped")) if n]
    text.append(f"  ·  {snapshot.attempts:,} attempts ({', '.join(notes)})", style="dim")
    return text


def progress_text(snapshot: QueueSnapshot | None, throughput: Throughput) -> Text:
    """Done of the total, the rate at which episodes settle and the time left for those still
    to run (in flight and to dispatch; a failed episode is not work left)."""
    if snapshot is None:
        return Text("")
    done, total = snapshot.counts.get("completed", 0), snapshot.total
    share = done / total if total else 0.0
    rate = throughput.per_minute()
    text = Text(f"{done:,}/{total:,} done {share:6.1%}")
    text.append(f"  {rate:,.1f}/min" if rate is not None else "  -/min", style="bold")
    text.append(f"  ETA {duration(throughput.eta(total - snapshot.finished))}")
    if snapshot.planned is None:
        text.append("  (total = dispatched so far)", style="dim")
    return text


def rows_title(rows: RowsPage) -> str:
    if not rows.complete:
        return f"Teams x tasks: indexing runs, {rows.indexed:,} so far…"
    if not rows.total_rows:
        return "Teams x tasks: none yet"
    return f"Teams x tasks: {rows.total_rows:,} rows, page {rows.page + 1}/{rows.pages}  ([ ] to page)"


class QueuePanel(Vertical):
    """Renders `QueueLoaded` and `EpisodesLoaded`; asks for rows and pages with messages."""

    BINDINGS = [("[", "page(-1)", "Prev page"), ("]", "page(1)", "Next page")]
    EPISODES_HINT = "Select a row (Enter) to list its episodes"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.episodes_shown: tuple[str, str, int] | None = None
        """(team, task, page) of the episode list on screen: its cursor stays only on the same list."""

    def compose(self) -> ComposeResult:
        yield Static(counts_text(None), id="state-counts")
        with Horizontal(id="progress-line"):
            yield ProgressBar(total=100, show_eta=False, show_percentage=False, id="progress")
            yield Static("", id="progress-label")
        yield Static("", id="rows-title", classes="table-title")
        yield DataTable(id="rows", cursor_type="row", zebra_stripes=True)
        yield Static(self.EPISODES_HINT, id="episodes-title", classes="table-title")
        yield DataTable(id="episodes", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        rows = self.query_one("#rows", DataTable)
        for label, key in (("Team", "team"), ("Task", "task"), ("Done", "done"), ("Fail", "failed"), ("Canc", "cancelled"),
                           ("Run", "running"), ("Wait", "waiting"), ("Total", "total"), ("%", "pct"), ("Tries", "attempts"),
                           ("Retry", "retries")):
            rows.add_column(label, key=key)
        episodes = self.query_one("#episodes", DataTable)
        for label, key in (("Episode", "name"), ("State", "state"), ("Try", "attempt"), ("Pool", "pool"), ("Started", "start")):
            episodes.add_column(label, key=key)

    def show_summary(self, snapshot: QueueSnapshot | None, throughput: Throughput) -> None:
        """Counts by state and the progress line."""
        self.query_one("#state-counts", Static).update(counts_text(snapshot))
        bar = self.query_one("#progress", ProgressBar)
        if snapshot is not None:
            bar.update(total=max(1, snapshot.total), progress=snapshot.counts.get("completed", 0))
        self.query_one("#progress-label", Static).update(progress_text(snapshot, throughput))

    def show_queue(self, snapshot: QueueSnapshot | None, rows: RowsPage, throughput: Throughput) -> None:
        self.show_summary(snapshot, throughput)
        self.query_one("#rows-title", Static).update(rows_title(rows))
        table = self.query_one("#rows", DataTable)
        cursor = table.cursor_row
        table.clear()
        for row in rows.rows:
            pct = f"{row.done / row.total:.0%}" if row.total else "-"
            table.add_row(
                row.team, row.task, Text(f"{row.done:,}", style="green"), Text(f"{row.failed:,}", style="red" if row.failed else ""),
                Text(f"{row.cancelled:,}", style="bright_black"), Text(f"{row.running:,}", style="cyan"), f"{row.waiting:,}",
                f"{row.total:,}", pct, Text(f"{row.attempts:,}", style="dim"), Text(f"{row.retries:,}", style="dim"),
                key=f"{row.team}\t{row.task}",
            )
        if rows.rows:
            table.move_cursor(row=min(cursor, len(rows.rows) - 1), animate=False)

    def clear(self, message: str) -> None:
        """Nothing of the campaign on screen (another is being loaded): `message` instead."""
        self.query_one("#state-counts", Static).update(Text(message, style="italic"))
        self.query_one("#progress", ProgressBar).update(total=100, progress=0)
        self.query_one("#progress-label", Static).update("")
        self.query_one("#rows-title", Static).update("")
        self.query_one("#rows", DataTable).clear()
        self.clear_episodes(self.EPISODES_HINT)

    def clear_episodes(self, title: str) -> None:
        self.query_one("#episodes-title", Static).update(title)
        self.query_one("#episodes", DataTable).clear()
        self.episodes_shown = None

    def show_episodes(self, page: EpisodesPage) -> None:
        self.query_one("#episodes-title", Static).update(
            f"Episodes of {page.team}/{page.task}: {page.total:,}, page {page.page + 1}/{page.pages}"
        )
        table = self.query_one("#episodes", DataTable)
        shown, self.episodes_shown = self.episodes_shown, (page.team, page.task, page.page)
        cursor = table.cursor_row if shown == self.episodes_shown else 0  # another list: from its top
        table.clear()
        for episode in page.episodes:
            started = episode.start_time.strftime("%m-%d %H:%M:%S") if episode.start_time else "-"
            table.add_row(episode.job_id or episode.name, state_text(episode.state_type, episode.state_name), str(episode.attempt),
                          episode.pool, started, key=str(episode.id))
        if page.episodes:
            table.move_cursor(row=min(cursor, len(page.episodes) - 1), animate=False)

    def selected_episode(self) -> str | None:
        table = self.query_one("#episodes", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def selected_episode_name(self) -> str | None:
        """The job id shown on the selected episode's row."""
        table = self.query_one("#episodes", DataTable)
        if not table.row_count:
            return None
        return str(table.get_row_at(table.cursor_row)[0])

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value or ""
        if event.data_table.id == "rows":
            team, _, task = key.partition("\t")
            self.post_message(RowSelected(team, task))
            self.query_one("#episodes", DataTable).focus()
        else:
            self.post_message(EpisodeSelected(key))

    def action_page(self, delta: int) -> None:
        focused = self.screen.focused
        table = "episodes" if focused is not None and focused.id == "episodes" else "rows"
        self.post_message(PageRequested(table, delta))
