"""`evalq demo` (a whole local evaluation campaign of the example challenge) and
`evalq policy-servers` (the demo policy servers of a resources.json).

Generates jobs from `examples/challenge/`, starts demo policy servers on loopback, an
embedded Prefect server with the local pool and a warm runner, runs the campaign, and
prints what happened, including how busy the policy servers were by their own clocks.
Each run gets its own folder under `<home>/demo/`, so nothing of an earlier run is
overwritten. The demo's fleet (`examples/challenge/demo-resources-raw.json`) is the
example's `resources-raw.json` with capacities that give every slot about the same work.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from flows.cli.console import console
from flows.cli.launch import run_campaign, stack_server
from flows.demo.busy import utilization
from flows.demo.policy_server import fleet_from_resources, move_ports
from flows.runtime.local_stack import LocalStack
from generate.errors import InputError, exit_on_input_error
from generate.models import Resources

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "challenge"
RESOURCES_RAW = EXAMPLE / "demo-resources-raw.json"
DEMO_EVALUATOR_OPTIONS = {"load_seconds": 2.0, "steps": 80, "step_seconds": 0.1}
"""8 s episodes: long enough next to their ~1-2 s of orchestration for the servers to stay busy."""


def demo_resources_raw(run_dir: Path, port_base: int | None) -> Path:
    """The demo's resources-raw.json; with `port_base`, a copy in `run_dir` whose i-th distinct
    server (in file order) listens on `port_base + i` instead of its port in the file."""
    if port_base is None:
        return RESOURCES_RAW
    from generate.jsonio import dump_json, read_json, write_atomic

    write_atomic(run_dir / "resources-raw.json", dump_json(move_ports(read_json(RESOURCES_RAW), port_base)))
    return run_dir / "resources-raw.json"


def demo_inputs(run_dir: Path, port_base: int | None = None) -> tuple[Path, Path]:
    """jobs.json and resources.json of the example challenge, in `run_dir`."""
    from generate.cli import run_generate

    jobs, resources = run_dir / "jobs.json", run_dir / "resources.json"
    run_generate(
        test_instances_dir=EXAMPLE / "test_instances",
        submissions_dir=EXAMPLE / "challenge_submissions",
        resources_raw_file=demo_resources_raw(run_dir, port_base),
        results_dir=run_dir / "results",
        output_jobs_file=jobs,
        output_resources_file=resources,
        quiet=True,
    )
    return jobs, resources


def server_table(stats: dict) -> Table:
    table = Table(title="Demo policy servers (their own count)")
    for column in ("server", "capacity", "episodes", "busy s", "max at once", "violations"):
        table.add_column(column, justify="right" if column != "server" else "left")
    for address, s in sorted(stats.items()):
        violations = f"[red]{s.violations}[/]" if s.violations else "0"
        table.add_row(address, str(s.capacity), str(s.episodes), f"{s.busy_seconds:.1f}", str(s.max_active), violations)
    return table


def busy_line(busy_log: Path, resources: dict) -> str:
    """How busy the policy servers were over the campaign's span, by their own clocks."""
    intervals = [json.loads(line) for line in busy_log.read_text().splitlines()] if busy_log.exists() else []
    if not intervals:
        return "The policy servers served no episode."
    capacities = {f"{s['host']}:{s['port']}": int(s.get("capacity", 1)) for servers in resources.values() for s in servers}
    first, last = min(i["start"] for i in intervals), max(i["end"] for i in intervals)
    share = utilization(intervals, capacities, (first, last))
    busy = sum(i["end"] - i["start"] for i in intervals)
    return (f"Policy servers busy [bold]{share:.0%}[/] of the campaign's span: {busy:.0f} episode-seconds on "
            f"{sum(capacities.values())} slots in {last - first:.1f} s, from the first episode's start to the last one's end.")


def run_demo(home: Path, keep: bool = False, port_base: int | None = None) -> int:
    started = time.time()
    run_dir = (Path(home) / "demo" / time.strftime("run-%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    jobs_file, resources_file = demo_inputs(run_dir, port_base)
    jobs = json.loads(jobs_file.read_text())
    resources = json.loads(resources_file.read_text())
    prefetch, max_prefetch = 1, 3
    worker_limit = Resources.model_validate(resources).most_in_flight(max_prefetch)
    console.print(f"[bold]evalq demo[/]: {len(jobs)} episodes on {sum(map(len, resources.values()))} policy servers -> {run_dir}")
    try:
        fleet = fleet_from_resources(resources, log_path=run_dir / "busy.jsonl").start()
    except InputError as exc:
        raise InputError(None, f"{exc} (evalq demo --port-base N moves the demo's servers)") from None
    try:
        with LocalStack(Path(home), worker_limit=worker_limit) as stack:
            stack_server(stack).announce()
            console.print(f"Prefect UI: {stack.ui_url}")
            summary = run_campaign(
                dict(
                    jobs_file=str(jobs_file), resources_file=str(resources_file),
                    results_dir=str(run_dir / "results"), name=f"demo-{run_dir.name}",
                    evaluator="sim", evaluator_options=DEMO_EVALUATOR_OPTIONS, prefetch=prefetch,
                    max_prefetch=max_prefetch, stats_interval=30.0,
                ),
                worker_limit, Path(home), stack,
            )
            console.print(server_table(fleet.stats()))
            console.print(busy_line(run_dir / "busy.jsonl", resources))
            console.print(
                f"Done in {time.time() - started:.0f} s. Results: {summary['results_dir']}  "
                f"Prefect UI: {stack.ui_url}"
            )
            if keep:
                console.print("--keep: the Prefect server and UI stay up; Ctrl-C stops them.")
                stop = threading.Event()
                signal.signal(signal.SIGINT, lambda *_: stop.set())
                signal.signal(signal.SIGTERM, lambda *_: stop.set())
                stop.wait()
    finally:
        fleet.stop()
    violations = sum(s.violations for s in fleet.stats().values())
    return 1 if summary["failed"] or violations else 0


@exit_on_input_error
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the Prefect server and UI up afterwards (Ctrl-C stops)"),
    home: Path = typer.Option(Path(".evalq"), "--home", help="Where the embedded server and demo runs live"),
    port_base: Optional[int] = typer.Option(None, "--port-base", min=1, max=65535, help="Demo policy servers on ports N, N+1, ... instead of resources-raw.json's"),
) -> None:
    """Run a whole evaluation campaign of the example challenge on this machine."""
    raise typer.Exit(run_demo(home=home, keep=keep, port_base=port_base))


def moved_resources(resources: Path, port_base: int) -> Path:
    """`<resources>.ports-<N>.json` beside `resources` (never over it): the same pools and servers,
    the i-th distinct server on port `port_base + i`, for the campaign's `--resources`."""
    from generate.jsonio import dump_json, read_model, write_atomic

    moved = move_ports(read_model(resources, Resources).model_dump(mode="json", exclude_none=True), port_base)
    target = resources.with_name(f"{resources.stem}.ports-{port_base}.json")
    write_atomic(target, dump_json(moved))
    return target


@exit_on_input_error
def policy_servers(
    resources: Path = typer.Argument(Path("resources.json")),
    log: Optional[Path] = typer.Option(None, "--log", help="Append busy intervals (JSON lines) here"),
    port_base: Optional[int] = typer.Option(None, "--port-base", min=1, max=65535,
                                            help="Serve on ports N, N+1, ... and write the resources.json that names them"),
) -> None:
    """Serve demo policy servers for every server in resources.json (until Ctrl-C)."""
    from flows.demo.policy_server import main

    if port_base is not None:
        resources = moved_resources(resources, port_base)
        typer.echo(f"servers moved to ports {port_base} and up: run the campaign with --resources {resources}", err=True)
    try:
        main([str(resources)] + (["--log", str(log)] if log else []))
    except InputError as exc:
        if exc.path is not None or port_base is not None:  # a bad file, or ports already moved
            raise
        raise InputError(None, f"{exc} (evalq policy-servers --port-base N serves them on ports N, N+1, ...)") from None
