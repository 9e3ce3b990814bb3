"""`evaltui`: the live dashboard of an evalq campaign running on Prefect.

The app only renders. A timer asks a thread worker for a refresh; the worker runs
`tui.source` coroutines on the background loop (`tui.loop`) and posts snapshots back
as `tui.messages`; a refresh still running when the timer fires is not doubled. The log
tail runs on the same loop and posts batches. An API failure shows a banner; the
next tick simply tries again.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path
from typing import Callable, TypeVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Input, Select, TabbedContent, TabPane

from flows.runtime.folder_server import DEFAULT_HOME
from tui import messages as msg
from tui.actions import ActionRefused
from tui.aggregate import History, Throughput
from tui.app_actions import EpisodeActions
from tui.arguments import OneLineErrors, seconds_above_zero
from tui.commands import EvalCommands
from tui.gateway import api_url
from tui.loop import BackgroundLoop, LoopStopped
from tui.source import Source
from tui.watched import WatchedServer
from tui.widgets.banner import Banner, describe_error
from tui.widgets.detail import EpisodeScreen
from tui.widgets.logs import LogsPanel
from tui.widgets.pools import PoolsPanel, record_history
from tui.widgets.queue import QueuePanel

W = TypeVar("W")
M = TypeVar("M")
TAB_FOCUS = {"queue": "#rows", "pools": "#pool-table", "logs": "#log-view"}
POOLS_EVERY = 5
"""Refresh pools every Nth tick while their tab is hidden (keeps the sparklines going)."""


def while_shown(handler: Callable[[EvalTui, M], None]) -> Callable[[EvalTui, M], None]:
    """Drop data messages that arrive while the app is closing (no screen left to render on)."""

    @wraps(handler)
    def render(app: EvalTui, message: M) -> None:
        if app.is_running and app.screen_stack:
            handler(app, message)

    return render


class EvalTui(EpisodeActions, App):
    CSS_PATH = "evaltui.tcss"
    TITLE = "evaltui"
    AUTO_FOCUS = "#rows"
    COMMANDS = App.COMMANDS | {EvalCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("1", "show_tab('queue')", "Queue", show=False),
        Binding("2", "show_tab('pools')", "Pools", show=False),
        Binding("3", "show_tab('logs')", "Logs", show=False),
        Binding("r", "retry", "Retry"),
        Binding("c", "cancel", "Cancel"),
        Binding("o", "open_ui", "Open"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("t", "toggle_theme", "Theme"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
        Binding("escape", "leave_input", "Leave input", show=False),
    ]

    def __init__(self, campaign: str | None = None, refresh_seconds: float = 2.0, live: bool = True, home: Path = DEFAULT_HOME):
        super().__init__()
        self.home = Path(home)
        self.prefect_server = WatchedServer(self.home)
        self.api_found = self.prefect_server.configured()
        """Whether an API is known; until then each tick looks for one (`tui/watched.py`)."""
        self.source = Source(campaign)
        self.refresh_seconds = refresh_seconds
        self.live = live
        self.io: BackgroundLoop | None = None
        self.throughput = Throughput()
        self.history = History()
        self.rows_page = 0
        self.episodes_page = 0
        self.selected_row: tuple[str, str] | None = None
        self.active_tab = "queue"
        self.detail_id: str | None = None
        self.paused = False
        self.settled = False
        self.known_campaigns: list[str] = []
        self.generation = 0
        """Bumped when another campaign is watched: reads begun before are dropped."""
        self.opened_urls: list[str] = []
        self.refreshes = 0
        self.last_refresh_seconds = 0.0
        self.max_stall = 0.0
        self._refreshing = threading.Lock()
        self._tick_at = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner(id="banner")
        with TabbedContent(initial="queue", id="tabs"):
            with TabPane("Queue [1]", id="queue"):
                yield QueuePanel()
            with TabPane("Pools [2]", id="pools"):
                yield PoolsPanel()
            with TabPane("Logs [3]", id="logs"):
                yield LogsPanel()
        yield Footer()

    def on_mount(self) -> None:
        self.update_subtitle()
        if not self.live:
            return
        self.io = BackgroundLoop()
        self.set_interval(self.refresh_seconds, self.refresh_data)
        self._tick_at = time.perf_counter()
        self.set_interval(0.1, self.watch_stalls)
        self.refresh_data()
        if self.api_found:
            self.start_log_tail()

    def start_log_tail(self) -> None:
        if self.io is not None:
            self.io.submit(self.source.tail_logs(
                on_lines=lambda lines: self.post_message(msg.LogsArrived(lines, self.source.campaign)),
                on_status=lambda error: self.post_message(msg.LogStreamStatus(error)),
            ))

    def on_unmount(self) -> None:
        if self.io is not None:
            self.io.stop(self.source.close())
        self.prefect_server.close()

    def watch_stalls(self) -> None:
        """Track how late the UI loop runs a 0.1 s timer: the bench's responsiveness figure."""
        now = time.perf_counter()
        self.max_stall = max(self.max_stall, now - self._tick_at - 0.1)
        self._tick_at = now

    def main(self, widget_type: type[W]) -> W:
        """A widget of the main screen, even while the episode screen is on top."""
        return self.screen_stack[0].query_one(widget_type)

    def update_subtitle(self) -> None:
        campaign = self.source.campaign or "no campaign yet"
        state = "finished" if self.settled else ("PAUSED" if self.paused else "dispatching")  # a finished campaign is not paused
        if self.live and not self.api_found:
            state = "no Prefect API"
        self.sub_title = f"{campaign} · {state}"

    # -- loading (thread workers) ---------------------------------------------------
    @work(thread=True, group="refresh")
    def refresh_data(self) -> None:
        """One refresh of what is on screen; skipped while the previous one runs."""
        if self.io is None or not self._refreshing.acquire(blocking=False):
            return
        if not self.api_found and not self.look_for_api():
            self._refreshing.release()
            return
        started = time.perf_counter()
        call, generation, selected = self.io.call, self.generation, self.selected_row
        try:
            snapshot = call(self.source.queue())
            rows = call(self.source.rows(self.rows_page)) if self.active_tab == "queue" or self.refreshes == 0 else None
            if rows is not None:
                self.post_message(msg.QueueLoaded(snapshot, rows, generation))
            if selected is not None and self.active_tab == "queue":
                self.post_message(msg.EpisodesLoaded(call(self.source.episodes(*selected, page=self.episodes_page)), generation))
            if self.active_tab == "pools" or self.refreshes % POOLS_EVERY == 0:
                self.post_message(msg.PoolsLoaded(call(self.source.pools()), generation))
            if self.detail_id is not None:
                self.post_message(msg.DetailLoaded(call(self.source.detail(self.detail_id)), generation))
            if self.refreshes % 30 == 0:
                self.known_campaigns = call(self.source.campaigns())
            if rows is None and snapshot is not None:
                self.post_message(msg.QueueLoaded(snapshot, None, generation))
            self.post_message(msg.ApiStatus(None))
        except LoopStopped:
            return
        except Exception as exc:  # noqa: BLE001 - shown in the banner, retried next tick
            self.post_message(msg.ApiStatus(describe_error(exc, api_url())))
            self.prefect_server.unreachable()
        finally:
            self.refreshes += 1
            self.last_refresh_seconds = time.perf_counter() - started
            self._refreshing.release()

    def look_for_api(self) -> bool:
        """In a worker, while no API is known: find one (`tui/watched.py`), or say there is none."""
        found = self.prefect_server.find()
        if found is None:
            self.post_message(msg.ApiStatus(self.prefect_server.missing()))
            return False
        self.api_found = True
        self.call_from_thread(self.notify, f"Watching {found.describe()}", title="Prefect server")
        self.call_from_thread(self.update_subtitle)
        self.start_log_tail()
        return True

    def fetch(self, coro):
        """Run a `Source` coroutine on the I/O loop from a worker; None (and the banner) on failure."""
        if self.io is None:
            coro.close()
            return None
        try:
            return self.io.call(coro)
        except LoopStopped:
            return None
        except Exception as exc:  # noqa: BLE001 - shown in the banner
            self.post_message(msg.ApiStatus(describe_error(exc, api_url())))
            return None

    @work(thread=True, group="load", exclusive=True)
    def load_episodes(self) -> None:
        generation, selected = self.generation, self.selected_row
        if selected is not None:
            page = self.fetch(self.source.episodes(*selected, page=self.episodes_page))
            if page is not None:
                self.post_message(msg.EpisodesLoaded(page, generation))

    @work(thread=True, group="detail", exclusive=True)
    def load_detail(self, flow_run_id: str) -> None:
        generation = self.generation
        detail = self.fetch(self.source.detail(flow_run_id))
        if detail is not None:
            self.post_message(msg.DetailLoaded(detail, generation))

    @work(thread=True, group="action")
    def send_action(self, name: str, *args: object) -> None:
        if self.io is None:
            return
        try:
            self.post_message(msg.ActionDone(self.io.call(getattr(self.source, name)(*args))))
        except ActionRefused as exc:
            self.post_message(msg.ActionDone(str(exc), ok=False))
        except LoopStopped:
            pass
        except Exception as exc:  # noqa: BLE001
            self.post_message(msg.ActionDone(describe_error(exc, api_url()), ok=False))

    # -- rendering ----------------------------------------------------------------
    def current(self, message) -> bool:
        """Whether a data message belongs to the campaign watched now (not one switched away from)."""
        return getattr(message, "generation", self.generation) == self.generation

    @while_shown
    def on_queue_loaded(self, message: msg.QueueLoaded) -> None:
        if not self.current(message):
            return
        snapshot = message.snapshot
        if snapshot is not None:
            self.paused = snapshot.paused
            self.settled = snapshot.settled
            self.throughput.add(snapshot.taken_at or datetime.now(timezone.utc), snapshot.finished)
        self.update_subtitle()
        panel = self.main(QueuePanel)
        if message.rows is not None:
            panel.show_queue(snapshot, message.rows, self.throughput)
        else:
            panel.show_summary(snapshot, self.throughput)

    @while_shown
    def on_episodes_loaded(self, message: msg.EpisodesLoaded) -> None:
        if not self.current(message) or (message.page.team, message.page.task) != self.selected_row:
            return  # another team x task was picked meanwhile
        self.episodes_page = message.page.page
        self.main(QueuePanel).show_episodes(message.page)

    @while_shown
    def on_pools_loaded(self, message: msg.PoolsLoaded) -> None:
        if not self.current(message):
            return
        record_history(self.history, message.snapshot)
        self.main(PoolsPanel).show_pools(message.snapshot, self.history)

    @while_shown
    def on_logs_arrived(self, message: msg.LogsArrived) -> None:
        if message.campaign is None or message.campaign == self.source.campaign:
            self.main(LogsPanel).add_lines(message.lines)

    @while_shown
    def on_log_stream_status(self, message: msg.LogStreamStatus) -> None:
        self.main(LogsPanel).set_status(message.error)

    @while_shown
    def on_detail_loaded(self, message: msg.DetailLoaded) -> None:
        if not self.current(message):
            return
        screen = self.screen
        if isinstance(screen, EpisodeScreen) and screen.flow_run_id == str(message.detail.run.id):
            screen.show(message.detail)

    @while_shown
    def on_api_status(self, message: msg.ApiStatus) -> None:
        self.main(Banner).show_error(message.error, self.refresh_seconds)

    @while_shown
    def on_action_done(self, message: msg.ActionDone) -> None:
        self.notify(message.text, severity="information" if message.ok else "error")
        if message.ok:
            self.refresh_data()
            if self.detail_id is not None:
                self.load_detail(self.detail_id)

    # -- navigation -----------------------------------------------------------------
    def on_row_selected(self, message: msg.RowSelected) -> None:
        if (message.team, message.task) != self.selected_row:  # the old list must not take an Enter meanwhile
            self.main(QueuePanel).clear_episodes(f"Episodes of {message.team}/{message.task}: loading…")
        self.selected_row = (message.team, message.task)
        self.episodes_page = 0
        self.load_episodes()

    def on_episode_selected(self, message: msg.EpisodeSelected) -> None:
        self.open_episode(message.flow_run_id)

    def open_episode(self, flow_run_id: str) -> EpisodeScreen:
        screen = EpisodeScreen(flow_run_id)
        self.detail_id = flow_run_id
        self.push_screen(screen, callback=lambda _: setattr(self, "detail_id", None))
        self.load_detail(flow_run_id)
        return screen

    def on_page_requested(self, message: msg.PageRequested) -> None:
        if message.table == "episodes":
            self.episodes_page = max(0, self.episodes_page + message.delta)
            self.load_episodes()
        else:
            self.rows_page = max(0, self.rows_page + message.delta)
            self.refresh_data()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.active_tab = event.pane.id or "queue"
        self.refresh_data()

    def action_show_tab(self, tab: str) -> None:
        """Show a panel and focus its main widget (focus left in a hidden pane would switch back)."""
        self.main(TabbedContent).active = tab
        self.screen_stack[0].query_one(TAB_FOCUS[tab]).focus()

    def action_leave_input(self) -> None:
        """Escape from a text field or a list: back to the panel's main widget, so the keys
        (`1`/`2`/`3`, `r`, `c`...) are the app's again."""
        if isinstance(self.focused, (Input, Select)):
            self.screen_stack[0].query_one(TAB_FOCUS[self.active_tab]).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in a filter applies it (it applies as typed) and leaves the field."""
        self.action_leave_input()

    def action_refresh(self) -> None:
        self.refresh_data()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrors(
        prog="evaltui",
        description="Live dashboard of an evalq campaign on the Prefect server evalq's rule finds.",
    )
    parser.add_argument("--campaign", help="campaign to watch (default: the most recent one)")
    parser.add_argument("--api", help="Prefect API URL (default: PREFECT_API_URL, else your `evalq server`, else this folder's embedded database)")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the folder whose embedded database to watch when no other server is found (default .evalq)")
    parser.add_argument("--refresh", type=seconds_above_zero, default=2.0, help="seconds between refreshes (default 2)")
    args = parser.parse_args(argv)
    if args.api:
        os.environ["PREFECT_API_URL"] = args.api
    app = EvalTui(campaign=args.campaign, refresh_seconds=args.refresh, home=args.home)
    app.run()
    for url in app.opened_urls:
        print(url)


if __name__ == "__main__":
    main()
