"""The campaign's end-of-run tables: nothing a user needs is cut off."""

from __future__ import annotations

from rich.console import Console

from flows.cli.console import summary_tables

LONG_WORD = "/results/team_with_a_long_name/metrics/" + "x" * 70 + ".json"
REASON = (
    "Failed: policy server 127.0.0.1:19799 unavailable after 3 connection attempts (Connection refused); "
    f"the last attempt also could not write {LONG_WORD} because the disk was full"
)


def summary(failed: dict[str, str]) -> dict:
    return dict(
        campaign="c", total=2, done=1, already_done=0, failed=failed, retried=2, wall_seconds=3.0,
        utilization={"bots_1": 0.5}, results_dir="/r", failed_file="/r/failed.txt",
    )  # fmt: skip


def column_text(table, column: int, width: int) -> str:
    """The text of one column of a rendered table, all rows' lines joined, whitespace removed."""
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    cells = [line.split("│")[column + 1] for line in console.export_text().splitlines() if line.count("│") > column + 1]
    return "".join("".join(cells).split())


def test_failed_reasons_are_wrapped_whole_not_cut():
    failed = summary({"team_with_a_long_name/pick_cube/12": REASON, "b/open/1": "Crashed: zombie"})
    table = summary_tables(failed)[-1]
    for width in (80, 120, 200):
        reasons = column_text(table, 1, width)
        assert "".join(REASON.split()) in reasons
        assert "Crashed:zombie" in reasons
        assert "team_with_a_long_name/pick_cube/12" in column_text(table, 0, width)


def test_without_a_terminal_progress_is_a_plain_line_per_stats_tick(monkeypatch):
    """A line at the first tick, then at most one per interval, and the last state at the end."""
    from flows.campaign.dispatch import Dispatcher
    from flows.campaign.outcomes import Tally
    from flows.cli import console as output

    printed = Console(width=40, record=True, color_system=None)  # narrow: a line is never cut, only wrapped
    monkeypatch.setattr(output, "console", printed)
    now = [100.0]
    plain = output.PlainProgress(interval=60.0, clock=lambda: now[0])
    tally, dispatcher = Tally(total=44), Dispatcher({"a": 2})
    for seconds, finished in ((1, 0), (30, 3), (61, 9), (90, 12), (125, 20)):
        now[0], tally.done = 100.0 + seconds, finished
        plain(tally, dispatcher)
    plain.flush()
    lines = printed.export_text().replace("\n", " ").split("episodes ")[1:]
    assert [" ".join(line.split()) for line in lines] == [
        f"{done}/44 | failed 0 | cancelled 0 | in flight 0 | retried 0 | 0:0{minutes} elapsed"
        for done, minutes in ((0, "0:01"), (9, "1:01"), (20, "2:05"))
    ]
