"""Command palette entries for the dashboard's actions."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class EvalCommands(Provider):
    """Retry, cancel, open, pause/resume, refresh, switch panel or campaign."""

    def commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        paused = bool(getattr(app, "paused", False))
        found = [
            ("Retry selected episode", app.action_retry, "Ask the campaign to run a failed or cancelled episode again"),
            ("Cancel selected episode", app.action_cancel, "Set the episode Cancelling, after a y (a cancel is never retried)"),
            ("Open selected episode in the Prefect UI", app.action_open_ui, "Print its URL"),
            ("Resume dispatch" if paused else "Pause dispatch", app.action_toggle_pause, "Set the campaign's pause variable"),
            ("Refresh now", app.action_refresh, "Reload every panel"),
            ("Show queue", partial(app.action_show_tab, "queue"), "Counts, progress, teams x tasks"),
            ("Show pools", partial(app.action_show_tab, "pools"), "Servers, holders, utilization"),
            ("Show logs", partial(app.action_show_tab, "logs"), "Live episode logs"),
        ]
        for campaign in getattr(app, "known_campaigns", []):
            found.append((f"Switch to campaign {campaign}", partial(app.switch_campaign, campaign), "Watch another campaign"))
        return found

    async def discover(self) -> Hits:
        for name, callback, help_text in self.commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
