"""`evalq leaderboard`: per team and task, a metric's mean and 95% interval from a results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from generate.errors import InputError, exit_on_input_error

FORMATS = ("table", "csv", "md", "json")


@exit_on_input_error
def leaderboard(
    results_dir: Path = typer.Option(..., "--results-dir", help="The campaign's results folder"),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="jobs.json: the planned episodes (coverage)"),
    metric: str = typer.Option("success", "--metric", help="A number (or boolean) the evaluator wrote, e.g. success, q_score"),
    output_format: str = typer.Option("table", "--format", help="table | csv | md | json"),
) -> None:
    """Per team and task: episodes, mean and 95% interval of a metric, coverage; per team overall."""
    from flows.results.leaderboard import to_csv, to_markdown
    from flows.results.metrics_files import board_from_results
    from generate.errors import require_dir
    from generate.jsonio import read_model
    from generate.models import JobList

    if output_format not in FORMATS:
        raise InputError(None, f"--format {output_format!r}: expected one of {', '.join(FORMATS)}")
    require_dir(results_dir)
    planned = read_model(jobs, JobList) if jobs else None
    board = board_from_results(results_dir, metric, planned)
    if output_format == "json":
        typer.echo(board.model_dump_json(indent=2))
    elif output_format == "csv":
        typer.echo(to_csv(board), nl=False)
    elif output_format == "md":
        typer.echo(to_markdown(board), nl=False)
    else:
        print_board(board)


def print_board(board) -> None:
    from rich.console import Console
    from rich.table import Table

    from flows.results.leaderboard import COLUMNS, cells

    console = Console(width=160)
    for title, rows in (("per team and task", board.rows), ("per team overall", board.teams)):
        table = Table(title=f"Leaderboard of {board.metric}, {title} ({board.interval})")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in ("team", "task") else "right")
        for row in rows:
            table.add_row(*cells(row))
        console.print(table)
    for path, why in board.problems.items():
        console.print(f"not used: {path}: {why}", markup=False, highlight=False)
