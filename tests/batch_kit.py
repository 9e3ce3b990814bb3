"""Builders shared by the batch tests: an item list, a pipeline command that fails for chosen
items, and what the server says about a batch's runs."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

PIPELINE = '''
import pathlib, sys, time
item, out, broken = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
print(f"processing {item}")
time.sleep(0.3 * (int(item.rsplit("-", 1)[1]) % 4))
if broken.exists() and item in broken.read_text().split():
    print(f"stage 2 of {item}: no benchmark tile", file=sys.stderr)
    sys.exit(3)
(out / "output.txt").write_text(f"{item} done\\n")
print(f"{item}: agreement written")
'''


def pipeline(tmp: Path, broken: list[str]) -> tuple[str, Path]:
    """`--command` of a pipeline that fails (exit 3, a stderr line) for the items listed in its
    broken file until that file is fixed, and the broken file."""
    script, broken_file = tmp / "pipeline.py", tmp / "broken.txt"
    script.write_text(PIPELINE)
    broken_file.write_text("".join(f"{item}\n" for item in broken))
    argv = [sys.executable, str(script), "{item}", "{item_dir}", str(broken_file)]
    return shlex.join(argv), broken_file


def item_list(tmp: Path, items: list[str], name: str = "items.txt") -> Path:
    """An item list with a comment and a blank line, as users write them."""
    path = tmp / name
    path.write_text("# items of the test batch\n\n" + "".join(f"{item}\n" for item in items))
    return path


async def batch_runs(batch: str) -> list:
    """Every item run of the batch (page by page)."""
    from prefect import get_client

    from flows.campaign.history import read_campaign_runs

    async with get_client() as client:
        return await read_campaign_runs(client, batch)


def runs_of(batch: str) -> list:
    return asyncio.run(batch_runs(batch))


def threshold_violations(runs: list, most: int, resume_at: int) -> list[str]:
    """Against the server's clock (created, end time): more than `most` runs in flight at once,
    or a run created after dispatch stopped at `most` before at most `resume_at` were in flight.
    The dispatcher learns of an end after it happened, so the runs truly in flight when it
    creates one are never more than it counted."""
    problems, stopped = [], False
    for run in sorted(runs, key=lambda r: r.created):
        at = run.created
        in_flight = sum(1 for r in runs if r.created < at and (r.end_time is None or r.end_time > at))
        if stopped and in_flight > resume_at:
            problems.append(f"{run.name} created at {at:%H:%M:%S.%f} with {in_flight} in flight (resume at {resume_at})")
        stopped = stopped and in_flight > resume_at
        if in_flight + 1 > most:
            problems.append(f"{run.name} created at {at:%H:%M:%S.%f} made {in_flight + 1} in flight (at most {most})")
        if in_flight + 1 >= most:
            stopped = True
    return problems


def pauses(runs: list, most: int) -> int:
    """How often the batch reached `most` in flight (each a pause of dispatch)."""
    count = 0
    for run in sorted(runs, key=lambda r: r.created):
        at = run.created
        if sum(1 for r in runs if r.created <= at and (r.end_time is None or r.end_time > at)) >= most:
            count += 1
    return count
