"""What evaltui's action keys do to the selected episode or the campaign: `r` retry, `c`
cancel (after a `y`), `o` its Prefect UI address, `p` pause or resume; and switching to
another campaign (the command palette). A mixin of `EvalTui`, kept apart so the app module
holds its loading and rendering."""

from __future__ import annotations

from tui.aggregate import History, Throughput
from tui.gateway import flow_run_url
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.detail import EpisodeScreen
from tui.widgets.logs import LogsPanel
from tui.widgets.pools import PoolsPanel
from tui.widgets.queue import QueuePanel


class EpisodeActions:
    """The actions of `EvalTui` (it provides `screen`, `main`, `notify`, `send_action`...)."""

    def selected_run(self) -> str | None:
        if isinstance(self.screen, EpisodeScreen):
            return self.screen.flow_run_id
        if self.active_tab == "queue":
            return self.main(QueuePanel).selected_episode()
        return None

    def with_selected(self) -> str | None:
        run = self.selected_run()
        if run is None:
            self.notify("Select an episode first (Queue: Enter on a row, then pick an episode)", severity="warning")
        return run

    def action_retry(self) -> None:
        if run := self.with_selected():
            self.send_action("retry", run)

    def action_cancel(self) -> None:
        """Cancel the selected episode once the user says `y`: a cancel is the user's word, never retried."""
        if run := self.with_selected():
            name = self.screen.detail.run.job_id if isinstance(self.screen, EpisodeScreen) and self.screen.detail else None
            name = name or self.main(QueuePanel).selected_episode_name() or run
            question = f"Cancel episode {name}?"
            consequence = "The campaign never retries a cancelled episode (rerun it with --only, or `r` here)."
            self.push_screen(ConfirmScreen(question, consequence), callback=lambda yes: yes and self.send_action("cancel", run))

    def action_open_ui(self) -> None:
        if run := self.with_selected():
            url = flow_run_url(run)
            self.opened_urls.append(url)
            self.copy_to_clipboard(url)
            self.notify(url, title="Prefect UI (copied)", timeout=10)

    def action_toggle_pause(self) -> None:
        self.send_action("set_paused", not self.paused)

    def switch_campaign(self, campaign: str) -> None:
        """Watch another campaign: every per-campaign view is emptied at once (nothing of the
        previous one stays on screen for `r`/`c` to act on), and reads begun before are dropped."""
        if self.io is not None:
            self.io.call(self.source.switch(campaign))
        else:
            self.source.campaign = campaign
        self.generation += 1  # after the switch: a read begun from now on reads the new campaign
        self.selected_row, self.rows_page, self.episodes_page = None, 0, 0
        self.paused = self.settled = False
        self.throughput, self.history = Throughput(), History()
        while isinstance(self.screen, (EpisodeScreen, ConfirmScreen)):
            self.pop_screen()
        self.detail_id = None
        self.main(QueuePanel).clear(f"Loading campaign {campaign}…")
        self.main(PoolsPanel).clear()
        self.main(LogsPanel).clear()
        self.update_subtitle()
        self.refresh_data()
