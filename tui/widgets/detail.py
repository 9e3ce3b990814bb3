"""Episode screen: what it is and why it waits, state history, attempts, logs, metrics, then its
parameters (long: last). The page scrolls by keyboard (arrows, Page Up/Down, Home/End); `l`
jumps to the logs, `Tab` walks into the tables and the log."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from tui.models import EpisodeDetail
from tui.widgets.logs import log_text
from tui.widgets.styles import state_text


class EpisodeScreen(Screen):
    """Shows one `EpisodeDetail`; the app loads it and refreshes it while the screen is open."""

    AUTO_FOCUS = "#detail"
    BINDINGS = [
        Binding("escape", "dismiss", "Back"),
        Binding("l", "show_logs", "Logs"),
        Binding("r", "app.retry", "Retry"),
        Binding("c", "app.cancel", "Cancel"),
        Binding("o", "app.open_ui", "Open in UI"),
    ]

    def __init__(self, flow_run_id: str) -> None:
        super().__init__()
        self.flow_run_id = flow_run_id
        self.detail: EpisodeDetail | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail"):
            yield Static("Loading episode…", id="detail-summary")
            yield Static("State history", classes="table-title")
            yield DataTable(id="detail-states", cursor_type="row")
            yield Static("Attempts", classes="table-title")
            yield DataTable(id="detail-attempts", cursor_type="row")
            yield Static("Logs", classes="table-title", id="detail-logs-title")
            yield RichLog(id="detail-logs", max_lines=1000, markup=False)
            yield Static("Metrics", classes="table-title")
            yield Static("", id="detail-metrics")
            yield Static("Parameters", classes="table-title")
            yield Static("", id="detail-parameters")
        yield Footer()

    def action_show_logs(self) -> None:
        """Scroll the page to the logs."""
        self.query_one("#detail", VerticalScroll).scroll_to_widget(self.query_one("#detail-logs-title"), top=True, animate=False)

    def on_mount(self) -> None:
        self.query_one("#detail-states", DataTable).add_columns("When (UTC)", "State", "Message")
        self.query_one("#detail-attempts", DataTable).add_columns("Try", "State", "Started", "Run")

    def show(self, detail: EpisodeDetail) -> None:
        self.detail = detail
        run = detail.run
        self.title = run.job_id or run.name
        summary = Text()
        summary.append(run.name, style="bold")
        summary.append("  ")
        summary.append_text(state_text(run.state_type, run.state_name))
        summary.append(f"\nteam {run.team}  task {run.task}  pool {run.pool or '-'}  attempt {run.attempt}")
        summary.append(f"\nserver {detail.server or '-'}")
        summary.append(f"\nvideo {detail.video or '-'}")
        if detail.waiting is not None:
            summary.append("\nwhy not playing: ", style="bold")
            summary.append(detail.waiting.reason, style="magenta")
            for line in detail.waiting.lines()[1:]:
                summary.append(f"\n{line}")
        summary.append(f"\n{detail.ui_url}", style="underline")
        self.query_one("#detail-summary", Static).update(summary)
        states = self.query_one("#detail-states", DataTable)
        states.clear()
        for change in detail.states:
            states.add_row(change.timestamp.strftime("%m-%d %H:%M:%S"), state_text(change.type, change.name), change.message[:80])
        attempts = self.query_one("#detail-attempts", DataTable)
        attempts.clear()
        for attempt in detail.attempts:
            started = attempt.start_time.strftime("%m-%d %H:%M:%S") if attempt.start_time else "-"
            attempts.add_row(str(attempt.attempt), state_text(attempt.state_type, attempt.state_name), started, attempt.name)
        if detail.metrics is not None:
            metrics = json.dumps(detail.metrics, indent=2, sort_keys=True)
        elif detail.metrics_path:
            metrics = f"not written yet ({detail.metrics_path})"
        else:
            metrics = "-"
        self.query_one("#detail-metrics", Static).update(Text(metrics))
        self.query_one("#detail-parameters", Static).update(Text(json.dumps(detail.parameters, indent=2, sort_keys=True)))
        logs = self.query_one("#detail-logs", RichLog)
        logs.clear()
        for line in detail.logs:
            logs.write(log_text(line))
