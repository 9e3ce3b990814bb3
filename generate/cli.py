"""`evalq generate`: challenge inputs -> jobs.json + resources.json.

`plan_challenge` reads the inputs into a `Plan`; `run_generate` also writes both
outputs (only once everything is valid). Both raise `InputError` on bad input;
the `generate` command turns that into one line on stderr and exit code 2.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from generate.errors import InputError, exit_on_input_error
from generate.instances import read_instances
from generate.jsonio import dump_json, write_atomic
from generate.plan import Plan, build_plan
from generate.resources import make_pools, read_resources_raw
from generate.results import DoneIndex
from generate.submissions import rank_entrants, read_submissions
from generate.summary import print_summary


def plan_challenge(
    test_instances_dir: Path | str,
    submissions_dir: Path | str,
    resources_raw_file: Path | str,
    results_dir: Path | str,
    top_k: int = 5,
    all_tasks: Collection[str] = (),
    strict: bool = False,
) -> Plan:
    """Read and check every input, and plan the jobs. Writes nothing."""
    ranking = rank_entrants(read_submissions(Path(submissions_dir)), top_k)
    instances = read_instances(Path(test_instances_dir))
    pools = make_pools(read_resources_raw(Path(resources_raw_file)))
    plan = build_plan(ranking, instances, pools, is_done=DoneIndex(results_dir), all_tasks=frozenset(all_tasks))
    if strict and plan.unserved:
        raise InputError(resources_raw_file, f"{plan.unserved[0]} (--strict)")
    return plan


def run_generate(
    test_instances_dir: Path | str = "test_instances",
    submissions_dir: Path | str = "challenge_submissions",
    resources_raw_file: Path | str = "resources-raw.json",
    results_dir: Path | str = "results",
    output_jobs_file: Path | str = "jobs.json",
    output_resources_file: Path | str = "resources.json",
    top_k: int = 5,
    all_tasks: Collection[str] = (),
    strict: bool = False,
    dry_run: bool = False,
    quiet: bool = True,
) -> Plan:
    """`evalq generate` as a function: plan, write both outputs atomically unless `dry_run`,
    and print the summary unless `quiet`. Raises `InputError` before writing anything."""
    plan = plan_challenge(test_instances_dir, submissions_dir, resources_raw_file, results_dir, top_k, all_tasks, strict)
    if not dry_run:
        outputs = [(output_jobs_file, dump_json(plan.jobs_json())), (output_resources_file, dump_json(plan.resources_json()))]
        for path, text in outputs:
            try:
                write_atomic(path, text)
            except OSError as exc:
                raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
    if not quiet:
        console = Console()
        print_summary(plan, console)
        if reason := plan.why_no_jobs():
            console.print(f"no jobs: {reason}", style="yellow", highlight=False)
        counts = f"{len(plan.jobs)} jobs, {len(plan.pools)} pools"
        console.print(f"dry run: {counts}; nothing written" if dry_run else f"wrote {counts} to {output_jobs_file} and {output_resources_file}")
    return plan


@exit_on_input_error
def generate(
    test_instances_dir: Annotated[Path, typer.Option(help="One folder per task of instance *.json files.")] = Path("test_instances"),
    submissions_dir: Annotated[Path, typer.Option(help="Submission *.json files.")] = Path("challenge_submissions"),
    resources_raw_file: Annotated[Path, typer.Option(help="Team slug -> policy servers.")] = Path("resources-raw.json"),
    results_dir: Annotated[Path, typer.Option(help="Episodes with <team_slug>/metrics/<task>_<id>.json here get no job.")] = Path("results"),
    output_jobs_file: Annotated[Path, typer.Option(help="Where to write the jobs.")] = Path("jobs.json"),
    output_resources_file: Annotated[Path, typer.Option(help="Where to write the pools.")] = Path("resources.json"),
    top_k: Annotated[int, typer.Option(min=0, help="Entrants selected per track.")] = 5,
    all_tasks: Annotated[list[str], typer.Option(metavar="TEAM_SLUG", help="This team gets jobs for every task it lists, whatever its score (repeatable).")] = [],  # noqa: B006
    strict: Annotated[bool, typer.Option("--strict", help="A job no server can serve is an error, not a warning.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the summary, write nothing.")] = False,
) -> None:
    """Turn submissions, test instances and policy servers into jobs.json and resources.json."""
    run_generate(
        test_instances_dir,
        submissions_dir,
        resources_raw_file,
        results_dir,
        output_jobs_file,
        output_resources_file,
        top_k=top_k,
        all_tasks=all_tasks,
        strict=strict,
        dry_run=dry_run,
        quiet=False,
    )
