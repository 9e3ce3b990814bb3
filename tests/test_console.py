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
