"""`evalq`: the command line. Each package contributes its own commands.

flows/ registers its own groups here. Groups that live above flows/ (`workpools/`: `workpools`,
`submit`, `runner`, `k8s`, `queue`) come through the `evalq.commands` entry points in
pyproject.toml, so flows/ never imports them (docs/architecture.md, "Layers"); an entry point
added or renamed takes effect once the package is installed again (`pip install -e .`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from flows.grader.cli import grade_app, grader_app
from generate.cli import generate
from generate.errors import InputError, exit_on_input_error
from flows.cloudlogging import cli as cloudlogging_cli
from flows import ops_cli, server_cli

app = typer.Typer(
    name="evalq",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Evaluate every (team, task, instance) episode of a challenge on Prefect.",
)
campaign_app = typer.Typer(no_args_is_help=True, help="Run evaluation campaigns.")
pools_app = typer.Typer(no_args_is_help=True, help="Policy-server pools (Prefect global concurrency limits).")
app.command("generate")(generate)
app.add_typer(campaign_app, name="campaign")
app.add_typer(pools_app, name="pools")
app.command("stream-logs")(cloudlogging_cli.stream_logs)
app.command("logs")(cloudlogging_cli.logs)
app.add_typer(grader_app, name="grader")
app.add_typer(grade_app, name="grade")
campaign_app.command("report")(ops_cli.campaign_report)
campaign_app.command("status")(ops_cli.campaign_status)
campaign_app.command("purge")(ops_cli.campaign_purge)
campaign_app.command("list")(ops_cli.campaign_list)
app.command("leaderboard")(ops_cli.leaderboard)
app.add_typer(server_cli.app, name="server")

COMMAND_GROUPS = "evalq.commands"
"""Entry-point group of the command groups that live above flows/: each names a `typer.Typer`
(added as a group of that name) or a function (added as that command)."""


def add_command_groups(app: typer.Typer, group: str = COMMAND_GROUPS) -> None:
    """Every command group the installed packages declare in `group`."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=group):
        command = entry.load()
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=entry.name)
        else:
            app.command(entry.name)(command)


add_command_groups(app)


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


def check_api(api_url: str) -> None:
    """Fail with one line when the Prefect API does not answer."""
    import httpx

    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise InputError(None, f"Prefect API at {api_url} unreachable ({exc.__class__.__name__}: {exc})") from None


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
    max_in_flight: Optional[int] = typer.Option(None, "--max-in-flight", min=1, help="Stop dispatch at this many"),
    resume_below: Optional[int] = typer.Option(None, "--resume-below", min=0, help="Resume dispatch below this many"),
    submit_interval: float = typer.Option(0.0, "--submit-interval", min=0, help="Seconds between submissions"),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1),
    episode_timeout: float = typer.Option(3600.0, "--episode-timeout", min=1, help="Seconds an episode may play on its server"),
    deployment: str = typer.Option("evaluate-episode/local", "--deployment", help="flow/deployment of the episodes"),
    stats_interval: float = typer.Option(60.0, "--stats-interval", min=1),
    home: Path = typer.Option(Path(".evalq"), "--home", help="Embedded server folder (when PREFECT_API_URL is unset)"),
    only: Optional[Path] = typer.Option(None, "--only", help="Run only the job ids listed in this file (failed.txt's format)"),
    server_wait: Optional[float] = typer.Option(None, "--server-wait", min=0, help="Seconds an episode waits while every server it may use is quarantined, then fails (default: until one is back)"),
) -> None:
    """Evaluate every job: on PREFECT_API_URL if set, else on an embedded server with a local worker."""
    import os

    from flows.inputs import load_campaign_inputs
    from flows.runner import run_campaign
    from flows.selection import read_only_file

    jobs_list, pools = load_campaign_inputs(jobs, resources)
    only_ids = read_only_file(only, {job.id for job in jobs_list}) if only else None
    options = parse_options(evaluator_option)
    selected = [job for job in jobs_list if only_ids is None or job.id in only_ids]
    if all(job.metrics_path(results_dir).exists() for job in selected):
        typer.echo(f"Campaign {name!r}: all {len(selected)} episodes already have metrics in {results_dir}; nothing to run.")
        raise typer.Exit(0)
    if os.environ.get("PREFECT_API_URL"):
        check_api(os.environ["PREFECT_API_URL"])
    summary = run_campaign(
        dict(
            jobs_file=str(jobs.resolve()), resources_file=str(resources.resolve()), results_dir=str(results_dir.resolve()),
            name=name, evaluator=evaluator, evaluator_options=options, prefetch=prefetch, max_prefetch=max_prefetch, max_in_flight=max_in_flight,
            resume_below=resume_below, submit_interval=submit_interval, max_attempts=max_attempts, timeout_seconds=episode_timeout,
            deployment=deployment, stats_interval=stats_interval, only=only_ids, server_wait_seconds=server_wait,
        ),
        worker_limit=pools.most_in_flight(max(prefetch, max_prefetch)),
        home=home,
    )
    raise typer.Exit(1 if summary["failed"] or summary.get("cancelled") else 0)


def _pools_command(resources: Path, action):
    import asyncio
    import os

    from prefect import get_client

    from generate.jsonio import read_model
    from generate.models import Resources

    pools = read_model(resources, Resources)
    if not os.environ.get("PREFECT_API_URL"):
        raise InputError(None, "PREFECT_API_URL is not set: which Prefect server should hold the pools?")
    check_api(os.environ["PREFECT_API_URL"])

    async def go():
        async with get_client() as client:
            return await action(client, pools)

    return asyncio.run(go())


@pools_app.command("apply")
@exit_on_input_error
def pools_apply(resources: Path = typer.Argument(Path("resources.json"))) -> None:
    """Create or update the concurrency limits of every pool and server."""
    from flows.pools import apply_pools

    outcome = _pools_command(resources, apply_pools)
    counts = {kind: sum(1 for v in outcome.values() if v == kind) for kind in ("created", "updated", "unchanged", "quarantined")}
    typer.echo(f"{len(outcome)} limits: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


@pools_app.command("status")
@exit_on_input_error
def pools_status(resources: Path = typer.Argument(Path("resources.json"))) -> None:
    """Capacity, busy slots and holders of every pool and server."""
    from rich.console import Console

    from flows.console import pool_status_table, pool_warnings_text
    from flows.pools import pool_status

    pools = _pools_command(resources, pool_status)
    Console(width=160).print(pool_status_table(pools))
    for line in pool_warnings_text(pools):
        typer.echo(line)


@app.command("demo")
@exit_on_input_error
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the Prefect server and UI up afterwards (Ctrl-C stops)"),
    home: Path = typer.Option(Path(".evalq"), "--home", help="Where the embedded server and demo runs live"),
    port_base: Optional[int] = typer.Option(None, "--port-base", min=1, max=65535, help="Demo policy servers on ports N, N+1, ... instead of resources-raw.json's"),
) -> None:
    """Run a whole evaluation campaign of the example challenge on this machine."""
    from flows.demo import run_demo

    raise typer.Exit(run_demo(home=home, keep=keep, port_base=port_base))


@app.command("policy-servers")
@exit_on_input_error
def policy_servers(
    resources: Path = typer.Argument(Path("resources.json")),
    log: Optional[Path] = typer.Option(None, "--log", help="Append busy intervals (JSON lines) here"),
) -> None:
    """Serve demo policy servers for every server in resources.json (until Ctrl-C)."""
    from flows.policy_server import main

    main([str(resources)] + (["--log", str(log)] if log else []))


if __name__ == "__main__":
    app()
