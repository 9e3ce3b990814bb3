"""`evalq campaign report | status | purge | list` and `evalq leaderboard`."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Optional

import typer

from generate.errors import InputError, exit_on_input_error

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FORMATS = ("table", "csv", "md", "json")


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `15m`, `12h`, `7d`, `2w` -> a timedelta; else `InputError` naming the option."""
    match = DURATION.match(text)
    if not match:
        raise InputError(None, f"--older-than {text!r}: expected a number and a unit s, m, h, d or w (e.g. 7d)")
    return dt.timedelta(seconds=float(match.group(1)) * UNIT_SECONDS[match.group(2)])


def with_api(action):
    """Run `action(client)` against PREFECT_API_URL (one-line errors when unset or down)."""
    import asyncio
    import os

    from prefect import get_client

    from flows.cli import check_api

    if not os.environ.get("PREFECT_API_URL"):
        raise InputError(None, "PREFECT_API_URL is not set: which Prefect server holds the campaign?")
    check_api(os.environ["PREFECT_API_URL"])

    async def go():
        async with get_client() as client:
            return await action(client)

    return asyncio.run(go())


@exit_on_input_error
def campaign_report(
    name: str = typer.Argument(..., help="Campaign name (its --name)"),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help="Where its metrics are (default: as the runs were told)"),
    as_json: bool = typer.Option(False, "--json", help="The report as JSON"),
) -> None:
    """Done / failed / cancelled / in flight, failures by reason, pool and server, ids to resubmit."""
    from flows.campaign_admin import gather_report
    from flows.campaign_report import report_text

    report = with_api(lambda client: gather_report(client, name, results_dir))
    if not report.runs:
        raise InputError(None, f"campaign {name!r}: no episode runs on this Prefect server")
    typer.echo(report.model_dump_json(indent=2) if as_json else report_text(report), nl=as_json)


@exit_on_input_error
def campaign_status(
    name: str = typer.Argument(..., help="Campaign name (its --name)"),
    episode: list[str] = typer.Option([], "--episode", help="Only this job id (team/task/instance); repeatable"),
    most: int = typer.Option(20, "--most", min=1, help="Explain at most this many episodes"),
    as_json: bool = typer.Option(False, "--json", help="As JSON"),
) -> None:
    """Episodes in flight, quarantined servers, and why each episode not playing waits."""
    from flows.campaign_admin import campaign_status as read_status, status_text

    status = with_api(lambda client: read_status(client, name, job_ids=set(episode) or None, most=most))
    typer.echo(status.model_dump_json(indent=2) if as_json else status_text(status), nl=as_json)


@exit_on_input_error
def campaign_purge(
    name: str = typer.Argument(..., help="Campaign name (its --name)"),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Only runs finished before this long ago (e.g. 7d, 12h)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be deleted, delete nothing"),
    force: bool = typer.Option(False, "--force", help="Purge finished runs even while the campaign runs"),
) -> None:
    """Delete the campaign's finished flow runs (and its variables once none is left); never results."""
    from flows.campaign_admin import CampaignRunning, purge_campaign

    age = parse_duration(older_than) if older_than else None

    async def purge(client):
        try:
            return await purge_campaign(client, name, age, dry_run, force)
        except CampaignRunning as exc:
            raise InputError(None, str(exc)) from None

    result = with_api(purge)
    verb = "would delete" if dry_run else "deleted"
    episodes = sum(result.episode_runs.values())
    states = ", ".join(f"{n} {state}" for state, n in result.episode_runs.items())
    typer.echo(f"Campaign {name}: {verb} {episodes} episode runs" + (f" ({states})" if states else "")
               + f" and {result.campaign_runs} campaign flow runs; {result.kept_runs} runs kept")
    for variable in result.variables:
        typer.echo(f"  {verb} variable {variable}")
    for artifact in result.artifacts:
        typer.echo(f"  {verb} artifact {artifact}")
    typer.echo("Metrics and results files are never touched.")


@exit_on_input_error
def campaign_list(as_json: bool = typer.Option(False, "--json", help="As JSON")) -> None:
    """Campaigns on the Prefect server with their totals and state."""
    from flows.campaign_admin import list_campaigns

    campaigns = with_api(list_campaigns)
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in campaigns], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Campaigns (episode runs by state)")
    for column in ("campaign", "state", "planned", "completed", "failed attempts", "cancelled", "in flight", "runs", "updated"):
        table.add_column(column)
    for c in campaigns:
        updated = f"{c.updated:%Y-%m-%d %H:%M}" if c.updated else "-"
        table.add_row(c.name, c.state, "-" if c.planned is None else str(c.planned), str(c.completed),
                      str(c.failed_attempts), str(c.cancelled), str(c.in_flight), str(c.runs), updated)
    Console(width=160).print(table)


@exit_on_input_error
def leaderboard(
    results_dir: Path = typer.Option(..., "--results-dir", help="The campaign's results folder"),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="jobs.json: the planned episodes (coverage)"),
    metric: str = typer.Option("success", "--metric", help="A number (or boolean) the evaluator wrote, e.g. success, q_score"),
    output_format: str = typer.Option("table", "--format", help="table | csv | md | json"),
) -> None:
    """Per team and task: episodes, mean and 95% interval of a metric, coverage; per team overall."""
    from flows.leaderboard import to_csv, to_markdown
    from flows.results_files import board_from_results
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

    from flows.leaderboard import COLUMNS, cells

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
