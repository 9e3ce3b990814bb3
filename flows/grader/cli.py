"""`evalq grader serve` (the API and, with --nodes, local node runners) and the `evalq grade` client."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from flows.grader.command import DEFAULT_GRADE_COMMAND, DEFAULT_TIMEOUT_FLOOR
from flows.runtime.discovery import API_HELP
from generate.errors import InputError, exit_on_input_error

grader_app = typer.Typer(no_args_is_help=True, help="The solution-grading HTTP API.")
grade_app = typer.Typer(no_args_is_help=True, help="Client of the grading API (EVALQ_GRADER_URL, EVALQ_GRADER_TOKEN).")
DEFAULT_PORT = 8001
"""The grading API's documented base URL is http://localhost:8001."""
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


@contextlib.contextmanager
def grading_server(api: str | None, start: bool = False) -> Iterator[str]:
    """The Prefect server the rule finds (`flows/runtime/discovery.py`), checked to answer; with
    `start`, the user's `evalq server` is started when there is none (and stays up: jobs outlive
    the API). This process and the node runners it starts talk to it within the block."""
    from flows.runtime.discovery import (
        find_or_start_user_server,
        pointed_at,
        require_prefect,
    )

    found = find_or_start_user_server(api) if start else require_prefect(api)
    found.announce()
    with pointed_at(found.api_url):
        yield found.api_url


@grader_app.command("serve")
@exit_on_input_error
def serve(
    tokens: Path = typer.Option(..., "--tokens", help="TOKENS.yaml: user_id -> token or salted hash"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(DEFAULT_PORT, "--port"),
    grade_command: str = typer.Option(DEFAULT_GRADE_COMMAND, "--grade-command", help="Argv template (no shell): {solution} {competition_id} {results} {workdir}"),
    grade_cwd: Optional[Path] = typer.Option(None, "--grade-cwd", help="Where the grade command runs (default: this directory; it must exist on the nodes)"),
    results_dir: Path = typer.Option(Path("grading-results"), "--results-dir", help="Work dirs and results files (shared with the nodes)"),
    nodes: int = typer.Option(0, "--nodes", min=0, help="Start this many local node runners (0: use the nodes already registered)"),
    slots: int = typer.Option(1, "--slots", min=1, help="Jobs each local node runs at once"),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.001),
    max_wait_seconds: float = typer.Option(14400.0, "--max-wait-seconds", min=0),
    max_job_seconds: Optional[float] = typer.Option(None, "--max-job-seconds", min=1, help="Kill a job after this long (default: jobs run as long as they need)"),
    timeout_factor: Optional[float] = typer.Option(None, "--timeout-factor", min=1, help="Kill a job at expected_time x this (default: never) ..."),
    timeout_floor: float = typer.Option(DEFAULT_TIMEOUT_FLOOR, "--timeout-floor", min=1, help="... but not before this many seconds"),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Serve the grading API (interactive docs at /docs) on the Prefect server the rule finds,
    else on your `evalq server`, started now if it is not up."""
    import asyncio

    import uvicorn
    from prefect import get_client

    from flows.grader import nodes as node_runners
    from flows.grader.app import GraderSettings, create_app
    from flows.grader.auth import load_tokens
    from flows.grader.command import split_template
    from flows.runtime.zombies import install_zombie_automation

    try:
        argv = split_template(grade_command)
    except ValueError as exc:
        raise InputError(None, f"--grade-command: {exc}") from None
    grade_cwd = (grade_cwd or Path.cwd()).resolve()
    if not grade_cwd.is_dir():
        raise InputError(None, f"--grade-cwd {grade_cwd}: no such directory")
    settings = GraderSettings(
        tokens=load_tokens(tokens), grade_argv=argv, results_dir=results_dir.resolve(), grade_cwd=grade_cwd,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_wait_seconds=max_wait_seconds,
        timeout_factor=timeout_factor, timeout_floor=timeout_floor, max_job_seconds=max_job_seconds,
    )
    settings.results_dir.mkdir(parents=True, exist_ok=True)

    async def prepare() -> list[str]:
        async with get_client() as client:
            await node_runners.apply_grader_deployment(client)
            names = await node_runners.ensure_local_nodes(client, nodes)
        await install_zombie_automation()  # a node that dies mid-job: its job ends Crashed (failed)
        return names

    exit_on_sigterm()  # uvicorn re-raises the SIGTERM it caught: without a handler the runners were never stopped
    with grading_server(api, start=True) as api_url:
        runners = []
        try:
            for node in asyncio.run(prepare()):
                runners.append(node_runners.start_node_runner(api_url, node, slots, settings.results_dir / "runners" / f"{node}.log"))
            uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
        finally:
            for runner in runners:
                node_runners.stop_node_runner(runner)


def exit_on_sigterm() -> None:
    """SIGTERM ends the command as Ctrl-C does, through its `finally` (its node runners and their
    forkservers stopped), not at once: the default action skipped that, and the runners, stopped
    only by their parent-death signal, left their forkservers behind. Once stopping, a second
    SIGTERM or Ctrl-C does not cut the stop short."""
    import signal

    def stop(*_) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)


@grader_app.command("node")
@exit_on_input_error
def node(
    name: str = typer.Option(..., "--name", help="The node's id (its work queue in the evalq-grader pool)"),
    ip: Optional[str] = typer.Option(None, "--ip", help="Its address, shown by /api/nodes"),
    slots: int = typer.Option(1, "--slots", min=1, help="Jobs it runs at once"),
    log: Path = typer.Option(Path("grader-node.log"), "--log"),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Serve one grading node from this machine (on the Prefect server the rule finds) until Ctrl-C."""
    import asyncio

    from prefect import get_client

    from flows.grader import nodes as node_runners

    async def register() -> None:
        async with get_client() as client:
            await node_runners.apply_grader_deployment(client)
            await node_runners.register_node(client, name, ip)

    exit_on_sigterm()
    with grading_server(api) as api_url:
        asyncio.run(register())
        runner = node_runners.start_node_runner(api_url, name, slots, log)
        typer.echo(f"node {name}: runner {runner.pid}, log {log}")
        try:
            runner.wait()
        except KeyboardInterrupt:
            pass
        finally:
            node_runners.stop_node_runner(runner)


@grader_app.command("hash-token")
def hash_token_command() -> None:
    """Read a token on stdin, print the salted hash to put in TOKENS.yaml instead."""
    from flows.grader.auth import hash_token

    token = sys.stdin.readline().strip()
    if not token:
        print("error: no token on stdin", file=sys.stderr)
        raise typer.Exit(2)
    typer.echo(hash_token(token))


def _url(url: Optional[str]) -> str:
    return (url or os.environ.get("EVALQ_GRADER_URL") or DEFAULT_URL).rstrip("/")


def _call(method: str, url: str, **kwargs) -> dict:
    """One request; a refused connection or a 4xx/5xx answer becomes one `InputError` line."""
    import httpx

    try:
        response = httpx.request(method, url, timeout=None, **kwargs)
    except httpx.HTTPError as exc:
        raise InputError(None, f"{url}: {exc.__class__.__name__}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text.strip()
        raise InputError(None, f"{response.status_code}: {detail}")
    return response.json()


def _echo_json(data: dict) -> None:
    typer.echo(json.dumps(data, indent=2))


def _config_bytes(config: Path) -> bytes:
    """The config as uploaded; EVALQ_GRADER_TOKEN fills in a missing token."""
    import yaml

    try:
        raw = config.read_bytes()
    except OSError as exc:
        raise InputError(config, f"cannot read: {exc.strerror}") from None
    token = os.environ.get("EVALQ_GRADER_TOKEN")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # the server names the problem
    if token and isinstance(data, dict) and "token" not in data:
        return yaml.safe_dump({**data, "token": token}).encode()
    return raw


@grade_app.command("submit")
@exit_on_input_error
def grade_submit(
    solution: Path = typer.Argument(..., help="The solution .py file"),
    config: Path = typer.Option(..., "--config", help="YAML: competition_id, project_id, user_id, expected_time[, token]"),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id at once"),
    url: Optional[str] = typer.Option(None, "--url", help=f"Grading API (EVALQ_GRADER_URL, default {DEFAULT_URL})"),
) -> None:
    """Submit a solution; print its results.jsonl lines (or, with --no-wait, its job id)."""
    try:
        code = solution.read_bytes()
    except OSError as exc:
        raise InputError(solution, f"cannot read: {exc.strerror}") from None
    answer = _call(
        "POST", f"{_url(url)}/api/submit", params={"wait": str(not no_wait).lower()},
        files={"code": (solution.name, code), "config_file": (config.name, _config_bytes(config))},
    )
    if no_wait or answer.get("message"):
        typer.echo(answer["job_id"])
        if answer.get("message"):
            typer.echo(answer["message"], err=True)
        return
    typer.echo(answer["stdout"], nl=False)
    if answer["status"] != "completed":
        typer.echo(f"job {answer['job_id']} {answer['status']} (exit code {answer['exit_code']})", err=True)
        raise typer.Exit(1)


@grade_app.command("status")
@exit_on_input_error
def grade_status(job_id: str, url: Optional[str] = typer.Option(None, "--url")) -> None:
    """A job's status, node, queue position and times (JSON)."""
    _echo_json(_call("GET", f"{_url(url)}/api/status/{job_id}"))


@grade_app.command("results")
@exit_on_input_error
def grade_results(job_id: str, url: Optional[str] = typer.Option(None, "--url")) -> None:
    """A job's results.jsonl on stdout, its stderr on stderr; exit 1 unless it completed."""
    answer = _call("GET", f"{_url(url)}/api/results/{job_id}")
    typer.echo(answer["stdout"], nl=False)
    typer.echo(answer["stderr"], nl=False, err=True)
    if answer["status"] != "completed":
        raise typer.Exit(1)


@grade_app.command("cancel")
@exit_on_input_error
def grade_cancel(job_id: str, url: Optional[str] = typer.Option(None, "--url")) -> None:
    """Cancel your job (EVALQ_GRADER_TOKEN)."""
    token = os.environ.get("EVALQ_GRADER_TOKEN")
    if not token:
        raise InputError(None, "EVALQ_GRADER_TOKEN is not set")
    typer.echo(_call("POST", f"{_url(url)}/api/cancel/{job_id}", headers={"Authorization": f"Bearer {token}"})["message"])


@grade_app.command("jobs")
@exit_on_input_error
def grade_jobs(
    user: Optional[str] = typer.Option(None, "--user"),
    status: Optional[str] = typer.Option(None, "--status", help="pending running completed failed cancelled"),
    limit: int = typer.Option(50, "--limit", min=1, max=500),
    url: Optional[str] = typer.Option(None, "--url"),
) -> None:
    """Recent jobs, newest first (JSON)."""
    params = {"limit": limit, **({"user_id": user} if user else {}), **({"status": status} if status else {})}
    _echo_json(_call("GET", f"{_url(url)}/api/jobs", params=params))


@grade_app.command("nodes")
@exit_on_input_error
def grade_nodes(url: Optional[str] = typer.Option(None, "--url")) -> None:
    """Every node with its queue (JSON)."""
    _echo_json(_call("GET", f"{_url(url)}/api/nodes"))
