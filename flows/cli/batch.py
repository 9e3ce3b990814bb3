"""`evalq batch run | report | purge`: batches of pipelines, one flow run per item (`flows/batch/`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from flows.cli.campaign import purge_command
from flows.cli.options import parse_duration
from flows.cli.reading import API, HOME, on_campaign_server, where
from flows.runtime.folder_server import DEFAULT_HOME
from generate.errors import InputError, exit_on_input_error

batch_app = typer.Typer(no_args_is_help=True, help="Run batches of pipelines: one flow run per item of a list.")


@batch_app.command("run")
@exit_on_input_error
def batch_run(
    name: str = typer.Option(..., "--name", "--batch_name", help="Batch name: run names, tags, idempotency keys"),
    items: Path = typer.Option(..., "--items", "--item_list", help="Item list: one id a line, blank lines and # comments ignored"),
    command: Optional[str] = typer.Option(None, "--command", help="The pipeline: an argv template, e.g. 'python run.py {item} --out {item_dir}'"),
    deployment: Optional[str] = typer.Option(None, "--deployment", help="Or FLOW/DEPLOYMENT of your own, run once per item"),
    parameter: List[str] = typer.Option([], "--parameter", help="key=value for --deployment's flow, e.g. item={item} (repeatable)"),
    pool: Optional[str] = typer.Option(None, "--pool", help="Work pool of the item runs (default evalq-local: a warm runner; a --deployment's own)"),
    job_variable: List[str] = typer.Option([], "--job-variable", help="key=value for the pool's job template, e.g. memory=16G (repeatable)"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="<dir>/<item>/ per item ({item_dir}), failed_items.txt"),
    max_in_flight: Optional[int] = typer.Option(None, "--max-in-flight", "--stop-threshold", "--stop_threshold", min=1, help="Pause dispatch when this many runs are in flight"),
    resume_at: Optional[int] = typer.Option(None, "--resume-at", "--resume-threshold", "--resume_threshold", help="... and resume when at most this many are (0: when all have ended)"),
    resume_below: Optional[int] = typer.Option(None, "--resume-below", help="... or when fewer than this many are (--resume-at + 1)"),
    count: str = typer.Option("own", "--count", help="What the thresholds count: own (this batch's runs) or pool (every run in flight on the work pool)"),
    submit_interval: float = typer.Option(0.0, "--submit-interval", "--wait-seconds", "--wait_seconds", min=0, help="Seconds between two submissions"),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.001, help="Seconds an item's command may run; then it is killed and the attempt fails"),
    keep_for: Optional[str] = typer.Option(None, "--keep-for", help="Drop its finished runs this long after they ended, e.g. 1h (results stay)"),
    stats_interval: float = typer.Option(60.0, "--stats-interval", min=1),
    paused: bool = typer.Option(False, "--paused", help="Start with dispatch paused (resume from evaltui, key p)"),
    home: Path = typer.Option(DEFAULT_HOME, "--home", help="This folder's embedded database, used when no other server is found"),
    api: Optional[str] = API,
) -> None:
    """One flow run per item: the command, or your deployment, on the Prefect server the rule finds
    (`--api`, PREFECT_API_URL, your `evalq server` with a warm runner), else on this folder's
    embedded database with a warm runner. Exit 0 when every item is done, 1 when some failed."""
    from flows.batch.items import read_item_list, result_path
    from flows.batch.settings import DEFAULT_WINDOW
    from flows.batch.templates import parse_command, parse_pairs
    from flows.campaign.settings import resume_threshold
    from flows.cli.launch import run_where_found

    if not name.strip():
        raise InputError(None, "--name is empty: a batch needs a name (its runs, tags and keys carry it)")
    if deployment is not None and (deployment.count("/") != 1 or not all(deployment.split("/"))):
        raise InputError(None, f"--deployment {deployment!r}: expected FLOW/DEPLOYMENT, e.g. touch-item/batch")
    if (command is None) == (deployment is None):
        raise InputError(None, "give the pipeline as --command 'argv template' or as --deployment FLOW/DEPLOYMENT (one of them)")
    if parameter and command is not None:
        raise InputError(None, "--parameter is for --deployment's flow; a --command names {item} in its arguments")
    if timeout is not None and deployment is not None:
        raise InputError(None, "--timeout bounds a --command; a deployment's flow bounds its own time (@flow(timeout_seconds=...))")
    if count not in ("own", "pool"):
        raise InputError(None, f"--count {count!r}: own or pool")
    try:
        resume_threshold(max_in_flight, resume_at, resume_below)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    ids = read_item_list(items)
    argv = parse_command(command) if command is not None else None
    parameters = parse_pairs(parameter, "--parameter", templated=True)
    job_variables = parse_pairs(job_variable, "--job-variable", templated=False)
    keep_seconds = parse_duration(keep_for, "--keep-for").total_seconds() if keep_for else None
    if all(result_path(results_dir, item).exists() for item in ids):
        typer.echo(f"Batch {name!r}: all {len(ids)} items are done in {results_dir}; nothing to run.")
        raise typer.Exit(0)
    summary = run_where_found(
        dict(name=name, items_file=str(items.resolve()), results_dir=str(results_dir.resolve()), pool=pool, command=argv,
             deployment=deployment or "", parameters=parameters, job_variables=job_variables, max_in_flight=max_in_flight,
             resume_at=resume_at, resume_below=resume_below, count=count, submit_interval=submit_interval,
             max_attempts=max_attempts, timeout_seconds=timeout, keep_for_seconds=keep_seconds,
             stats_interval=stats_interval, paused=paused, cwd=os.getcwd()),
        worker_limit=max_in_flight or DEFAULT_WINDOW, home=home, api=api, batch=True,
    )
    raise typer.Exit(1 if summary["failed"] or summary["cancelled"] else 0)


@batch_app.command("report")
@exit_on_input_error
def batch_report(
    name: str = typer.Argument(..., help="Batch name (its --name)"),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where to write the report (default reports/<name>)"),
    as_json: bool = typer.Option(False, "--json", help="The report as JSON on stdout too"),
    api: Optional[str] = API,
    home: Path = HOME,
) -> None:
    """Write summary.md (also shown), failed/<item>.log per failed item (state, message, its
    log's last 200 lines) and failed_items.txt (an item list for --items) into the report folder."""
    from slugify import slugify

    from flows.batch.items import item_problem
    from flows.batch.report import (
        gather_batch_report,
        summary_markdown,
        write_report_folder,
    )

    folder = report_dir or Path("reports") / (name if item_problem(name) is None else slugify(name))
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "--report-dir is not a directory")
    report, found, passed = on_campaign_server(name, lambda client: gather_batch_report(client, name), api, home)
    if not report.report.runs:
        raise InputError(None, f"batch {name!r}: no item runs on {where(found, passed)}")
    found.announce()
    try:
        write_report_folder(report, folder)
    except OSError as exc:
        raise InputError(Path(exc.filename or folder), f"cannot write the report: {exc.strerror or exc}") from None
    print(f"Wrote {folder / 'summary.md'}, {len(report.failed_items)} failed item logs in {folder / 'failed'} and "
          f"{folder / 'failed_items.txt'} ({len(report.report.resubmit)} items)", file=sys.stderr)
    typer.echo(report.model_dump_json(indent=2) if as_json else summary_markdown(report), nl=as_json)


batch_app.command("purge")(purge_command("Batch", "item runs", "batch flow runs"))
