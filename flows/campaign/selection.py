"""`evalq campaign run --only FILE`: the job ids to run, one per line (the format of `failed.txt`)."""

from __future__ import annotations

from pathlib import Path

from generate.errors import InputError
from generate.jsonio import read_text
from generate.models import Job


def parse_id_lines(text: str) -> list[tuple[int, str]]:
    """(line number, job id) for every line that is neither blank nor a `#` comment."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0].strip()
        if value:
            entries.append((number, value))
    return entries


def read_only_file(path: Path | str, known: set[str]) -> list[str]:
    """The ids listed in `path`, each once, in file order; an unknown id is an `InputError`
    naming its line."""
    path = Path(path)
    text = read_text(path)
    ids: dict[str, None] = {}
    for number, job_id in parse_id_lines(text):
        if job_id not in known:
            raise InputError(path, f"line {number}: unknown job id {job_id!r} (not in the jobs file)")
        ids.setdefault(job_id, None)
    return list(ids)


def select_jobs(jobs: list[Job], ids: list[str]) -> list[Job]:
    """The jobs named in `ids`, in the jobs file's order; unknown ids are a `ValueError`."""
    unknown = set(ids) - {job.id for job in jobs}
    if unknown:
        raise ValueError(f"unknown job ids: {', '.join(sorted(unknown))}")
    wanted = set(ids)
    return [job for job in jobs if job.id in wanted]
