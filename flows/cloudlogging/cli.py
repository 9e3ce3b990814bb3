"""`evalq stream-logs NAME` and `evalq logs NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from generate.errors import exit_on_input_error

PROJECT = typer.Option(None, "--project", help="Google Cloud project (default: GOOGLE_CLOUD_PROJECT or the credentials').")


@exit_on_input_error
def stream_logs(
    name: str = typer.Argument(..., help="Log name, e.g. jobqueue."),
    project: Optional[str] = PROJECT,
    interval: float = typer.Option(1.0, "--interval", min=0.01, help="Seconds between writes."),
) -> None:
    """Write each line of stdin as an entry of log NAME (severity from the line) and echo it."""
    from flows.cloudlogging.client import make_client
    from flows.cloudlogging.stream import stream_stdin

    raise typer.Exit(stream_stdin(make_client(project), name, interval))


@exit_on_input_error
def logs(
    name: str = typer.Argument(..., help="Log name."),
    since: str = typer.Option("1d", "--since", help="How far back: 30m, 12h, 3d, 2w."),
    filter_: Optional[str] = typer.Option(None, "--filter", help='Cloud Logging filter, e.g. labels.team="alpha".'),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the entries to this JSON file (else stdout)."),
    project: Optional[str] = PROJECT,
) -> None:
    """Read the entries of log NAME back, oldest first, as JSON."""
    from flows.cloudlogging.client import make_client
    from flows.cloudlogging.read import parse_since, read_entries
    from generate.jsonio import dump_json, write_atomic

    window = parse_since(since)
    entries = read_entries(make_client(project), name, window, filter_)
    if output is None:
        print(dump_json(entries), end="")
        return
    write_atomic(output, dump_json(entries))
    print(f"{len(entries)} entries -> {output}")
