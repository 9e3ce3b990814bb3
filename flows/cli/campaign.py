"""`evalq campaign run | report | status | purge | list`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from flows.cli.options import parse_duration
from flows.cli.reading import (
    API,
    HOME,
    on_campaign_server,
    on_every_campaign_server,
    where,
)
from flows.runtime.discovery import announce
from flows.runtime.folder_server import DEFAULT_HOME
from generate.errors import InputError, exit_on_input_error

campaign_app = typer.Typer(no_args_is_help=True, help="Run evaluation campaigns.")
@exit_on_input_error
def campaign_report(
    name: str = typer.Argument(..., help="Campaign name (its --name)"),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help="Where its metrics are (default: as the runs were told)"),
    as_json: bool = typer.Option(False, "--json", help="The report as JSON"),
    write_failed: bool = typer.Option(False, "--write-failed", help="Rewrite <results-dir>/failed.txt from the server's truth (once the campaign has ended)"),
    api: Optional[str] = API,
    home: Path = HOME,
) -> None:
    """Done / failed / cancelled / in flight, failures by reason, pool and server, ids to resubmit."""
    import sys

    from flows.reports.report import report_text
    from flows.reports.runs import gather_report

    report, found, passed = on_campaign_server(name, lambda client: gather_report(client, name, results_dir), api, home)
    if not report.runs:
        raise InputError(None, f"campaign {name!r}: no episode runs on {where(found, passed)}")
    found.announce()
    if write_failed:
        from flows.campaign.outputs import write_failed_file

        if report.dispatching:
            raise InputError(None, f"campaign {name!r} is running: it writes failed.txt itself when it ends")
        folder = results_dir or (Path(report.results_dir) if report.results_dir else None)
        if folder is None:
            raise InputError(None, f"campaign {name!r}: its runs name no results dir; give --results-dir")
        written = write_failed_file(folder, report.resubmit)
        print(f"Wrote {len(report.resubmit)} failed job ids to {written}", file=sys.stderr)
    typer.echo(report.model_dump_json(indent=2) if as_json else report_text(report), nl=as_json)


@exit_on_input_error
def campaign_status(
    name: str = typer.Argument(..., help="Campaign name (its --name)"),
    episode: list[str] = typer.Option([], "--episode", help="Only this job id (team/task/instance); repeatable"),
    most: int = typer.Option(20, "--most", min=1, help="Explain at most this many episodes"),
    as_json: bool = typer.Option(False, "--json", help="As JSON"),
    api: Optional[str] = API,
    home: Path = HOME,
) -> None:
    """Episodes in flight, quarantined servers, and why each episode not playing waits."""
    from flows.reports.status import campaign_status as read_status
    from flows.reports.status import status_text

    status, found, _ = on_campaign_server(name, lambda client: read_status(client, name, job_ids=set(episode) or None, most=most),
                                          api, home)
    found.announce()
    typer.echo(status.model_dump_json(indent=2) if as_json else status_text(status), nl=as_json)


def purge_command(what: str, jobs: str, dispatchers: str):
    """The `purge` command of campaigns (or of batches: `what` names them, `jobs` and
    `dispatchers` their kinds of runs)."""
    def purge(
        name: str = typer.Argument(..., help=f"{what} name (its --name)"),
        older_than: Optional[str] = typer.Option(None, "--older-than", help="Only runs finished before this long ago (e.g. 7d, 12h)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be deleted, delete nothing"),
        force: bool = typer.Option(False, "--force", help=f"Purge finished runs even while the {what.lower()} runs"),
        api: Optional[str] = API,
        home: Path = HOME,
    ) -> None:
        purge_and_say(what, jobs, dispatchers, name, older_than, dry_run, force, api, home)

    purge.__doc__ = f"Delete the {what.lower()}'s finished flow runs (and its variables once none is left); never results."
    return exit_on_input_error(purge)


campaign_purge = purge_command("Campaign", "episode runs", "campaign flow runs")


def purge_and_say(what: str, jobs: str, dispatchers: str, name: str, older_than: str | None, dry_run: bool, force: bool,
                  api: str | None, home: Path) -> None:
    """Purge campaign (or batch) `name` where it lives and say what went: `what` names it, `jobs`
    and `dispatchers` its kinds of runs."""
    from flows.reports.purge import CampaignRunning, purge_campaign

    age = parse_duration(older_than) if older_than else None

    async def purge(client):
        try:
            return await purge_campaign(client, name, age, dry_run, force)
        except CampaignRunning as exc:
            raise InputError(None, str(exc)) from None

    result, found, _ = on_campaign_server(name, purge, api, home)
    found.announce()
    verb = "would delete" if dry_run else "deleted"
    episodes = sum(result.episode_runs.values())
    states = ", ".join(f"{n} {state}" for state, n in result.episode_runs.items())
    typer.echo(f"{what} {name}: {verb} {episodes} {jobs}" + (f" ({states})" if states else "")
               + f" and {result.campaign_runs} {dispatchers}; {result.kept_runs} runs kept")
    if result.purge_runs:
        typer.echo(f"  {verb} {result.purge_runs} runs of its batch-purge flow (--keep-for)")
    for variable in result.variables:
        typer.echo(f"  {verb} variable {variable}")
    for artifact in result.artifacts:
        typer.echo(f"  {verb} artifact {artifact}")
    typer.echo("Metrics and results files are never touched.")


@exit_on_input_error
def campaign_list(
    as_json: bool = typer.Option(False, "--json", help="As JSON"),
    api: Optional[str] = API,
    home: Path = HOME,
) -> None:
    """Campaigns with their totals and state: on the Prefect server the rule finds, and in this
    folder's embedded database when that server is your `evalq server`."""
    from flows.reports.listing import list_campaigns

    listed = on_every_campaign_server(list_campaigns, api, home)
    announce(*(found for found, _ in listed))
    if as_json:
        typer.echo(json.dumps([{**c.model_dump(mode="json"), "prefect": found.api_url} for found, campaigns in listed
                               for c in campaigns], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    for found, campaigns in listed:
        title = "Campaigns (episodes by their latest run; attempts and retries apart)" \
            + ("" if len(listed) == 1 else f" on {found.source.value}")
        table = Table(title=title)
        for column in ("campaign", "state", "planned", "done", "failed", "cancelled", "in flight", "waiting", "attempts",
                       "retries", "updated"):
            table.add_column(column)
        for c in campaigns:
            updated = f"{c.updated:%Y-%m-%d %H:%M}" if c.updated else "-"
            table.add_row(c.name, c.state, "-" if c.planned is None else str(c.planned), str(c.done), str(c.failed),
                          str(c.cancelled), str(c.in_flight), "-" if c.waiting is None else str(c.waiting), str(c.attempts),
                          str(c.retries), updated)
        Console(width=160).print(table)


def parse_options(pairs: list[str]) -> dict:
    """`k=v` pairs; values are JSON when they parse (numbers, booleans), else strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(None, f"--evaluator-option {pair!r}: expected key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@campaign_app.command("run")
@exit_on_input_error
def campaign_run(
    jobs: Path = typer.Option(Path("jobs.json"), "--jobs", help="jobs.json from `evalq generate`"),
    resources: Path = typer.Option(Path("resources.json"), "--resources", help="resources.json from `evalq generate`"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    name: str = typer.Option("campaign", "--name", help="Campaign name: tags, idempotency keys, artifact"),
    evaluator: str = typer.Option("sim", "--evaluator", help="sim | command:<argv template> | package.module:Class"),
    evaluator_option: List[str] = typer.Option([], "--evaluator-option", help="key=value, repeatable"),
    prefetch: int = typer.Option(1, "--prefetch", min=0, help="Episodes per server loading ahead (at least)"),
    max_prefetch: int = typer.Option(3, "--max-prefetch", min=0, help="At most this many per server, when episodes are slow to load"),
    max_in_flight: Optional[int] = typer.Option(None, "--max-in-flight", min=1, help="Pause dispatch when this many episodes are in flight"),
    resume_at: Optional[int] = typer.Option(None, "--resume-at", help="... and resume it when at most this many are (0: when all have ended)"),
    resume_below: Optional[int] = typer.Option(None, "--resume-below", help="... or when fewer than this many are (--resume-at + 1)"),
    submit_interval: float = typer.Option(0.0, "--submit-interval", min=0, help="Seconds between submissions"),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1),
    episode_timeout: float = typer.Option(3600.0, "--episode-timeout", min=1, help="Seconds an episode may play on its server"),
    deployment: str = typer.Option("evaluate-episode/local", "--deployment", help="flow/deployment of the episodes"),
    stats_interval: float = typer.Option(60.0, "--stats-interval", min=1),
    home: Path = typer.Option(DEFAULT_HOME, "--home", help="This folder's embedded database, used when no other server is found"),
    api: Optional[str] = API,
    only: Optional[Path] = typer.Option(None, "--only", help="Run only the job ids listed in this file (failed.txt's format)"),
    server_wait: Optional[float] = typer.Option(None, "--server-wait", min=0, help="Seconds an episode waits while every server it may use is quarantined, then fails (default: until one is back)"),
    paused: bool = typer.Option(False, "--paused", help="Start with dispatch paused (resume from evaltui, key p); without it a run starts unpaused, whatever an earlier one left"),
) -> None:
    """Evaluate every job on the Prefect server the rule finds (`--api`, PREFECT_API_URL, your `evalq
    server` with a local runner), else on this folder's embedded database with a local runner."""
    from flows.campaign.inputs import load_campaign_inputs
    from flows.campaign.selection import read_only_file
    from flows.campaign.settings import resume_threshold
    from flows.cli.launch import run_where_found

    try:
        resume_threshold(max_in_flight, resume_at, resume_below)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    jobs_list, pools = load_campaign_inputs(jobs, resources)
    only_ids = read_only_file(only, {job.id for job in jobs_list}) if only else None
    options = parse_options(evaluator_option)
    selected = [job for job in jobs_list if only_ids is None or job.id in only_ids]
    if all(job.metrics_path(results_dir).exists() for job in selected):
        typer.echo(f"Campaign {name!r}: all {len(selected)} episodes already have metrics in {results_dir}; nothing to run.")
        raise typer.Exit(0)
    summary = run_where_found(
        dict(
            jobs_file=str(jobs.resolve()), resources_file=str(resources.resolve()), results_dir=str(results_dir.resolve()),
            name=name, evaluator=evaluator, evaluator_options=options, prefetch=prefetch, max_prefetch=max_prefetch,
            max_in_flight=max_in_flight, resume_at=resume_at, resume_below=resume_below, submit_interval=submit_interval,
            max_attempts=max_attempts, timeout_seconds=episode_timeout, deployment=deployment,
            stats_interval=stats_interval, only=only_ids, server_wait_seconds=server_wait, paused=paused,
        ),
        worker_limit=pools.most_in_flight(max(prefetch, max_prefetch)), home=home, api=api,
    )
    raise typer.Exit(1 if summary["failed"] or summary.get("cancelled") else 0)


campaign_app.command("report")(campaign_report)
campaign_app.command("status")(campaign_status)
campaign_app.command("purge")(campaign_purge)
campaign_app.command("list")(campaign_list)
