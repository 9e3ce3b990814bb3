"""`evalq`: the root app of the command line; one module per command group beside it.

flows/ registers its own groups here. Groups that live above flows/ (`workpools/`: `workpools`,
`submit`, `runner`, `k8s`, `queue`) come through the `evalq.commands` entry points in
pyproject.toml, so flows/ never imports them (docs/architecture.md, "Layers"); an entry point
added or renamed takes effect once the package is installed again (`pip install -e .`).
"""

from __future__ import annotations

import typer

from flows.cli import demo, leaderboard, server
from flows.cli.batch import batch_app
from flows.cli.campaign import campaign_app
from flows.cli.pools import pools_app
from flows.cli.usage import OneLineUsageErrors
from flows.cloudlogging import cli as cloudlogging_cli
from flows.grader.cli import grade_app, grader_app
from generate.cli import generate

app = typer.Typer(
    name="evalq",
    cls=OneLineUsageErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Evaluate every (team, task, instance) episode of a challenge on Prefect; run batches of pipelines.",
)
app.command("generate")(generate)
app.add_typer(campaign_app, name="campaign")
app.add_typer(batch_app, name="batch")
app.add_typer(pools_app, name="pools")
app.command("stream-logs")(cloudlogging_cli.stream_logs)
app.command("logs")(cloudlogging_cli.logs)
app.add_typer(grader_app, name="grader")
app.add_typer(grade_app, name="grade")
app.command("leaderboard")(leaderboard.leaderboard)
app.add_typer(server.app, name="server")
app.command("demo")(demo.demo)
app.command("policy-servers")(demo.policy_servers)

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
        else:  # a function may carry click's context settings (`evalq submit`: options end at the command)
            app.command(entry.name, context_settings=getattr(command, "context_settings", None))(command)


add_command_groups(app)

