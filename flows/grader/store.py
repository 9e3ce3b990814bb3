"""Files of the grading service, all under the results dir (shared by the API and the nodes).

    <results>/work/_uploads/<uuid>.py            an upload until its run takes it
    <results>/work/<user slug>/<job id>/          the job's working directory:
        solution.py  results.jsonl  stdout.log  stderr.log  job.json
    <results>/<user slug>_<competition>_<YYYYMMDD_HHMMSS>.jsonl    the saved results
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from slugify import slugify

from flows.grader.models import JobRecord
from generate.jsonio import write_atomic, write_new_atomic

WORK = "work"
UPLOADS = "_uploads"  # slugs never contain "_": no user's folder can be called that
SOLUTION = "solution.py"
RESULTS = "results.jsonl"
STDOUT = "stdout.log"
STDERR = "stderr.log"
RECORD = "job.json"
OUTPUT_LIMIT = 1_000_000
"""At most this many characters of each output are served (the end of it)."""


def user_slug(user_id: str) -> str:
    """A user id made safe as a path part and a tag (a digest when nothing usable is left)."""
    return slugify(user_id, max_length=64) or "user-" + hashlib.sha256(user_id.encode()).hexdigest()[:12]


def work_dir(results_dir: Path | str, user_id: str, job_id: str) -> Path:
    return Path(results_dir) / WORK / user_slug(user_id) / str(uuid.UUID(str(job_id)))


def stage_upload(results_dir: Path | str, code: str) -> Path:
    """Put an uploaded solution where its run will find it; the path goes into the run's parameters."""
    path = Path(results_dir) / WORK / UPLOADS / f"{uuid.uuid4().hex}.py"
    write_atomic(path, code, private=True)  # a solution is its author's until graded
    return path


def take_upload(staged: Path | str, workdir: Path) -> Path:
    """Move the staged upload into the job's working directory (once; later calls find it there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    solution = workdir / SOLUTION
    if Path(staged).exists():
        Path(staged).replace(solution)
    if not solution.exists():
        raise FileNotFoundError(f"the uploaded solution {staged} is gone")
    return solution


def discard_upload(staged: Path | str) -> None:
    Path(staged).unlink(missing_ok=True)


def write_record(workdir: Path, record: JobRecord) -> None:
    write_atomic(workdir / RECORD, record.model_dump_json(indent=2) + "\n")


def read_record(workdir: Path) -> JobRecord | None:
    try:
        return JobRecord.model_validate_json((workdir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _tail(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - OUTPUT_LIMIT))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def read_outputs(workdir: Path) -> tuple[str, str]:
    """(stdout, stderr) to serve: stdout is results.jsonl, or the command's stdout if there is none."""
    stdout = _tail(workdir / RESULTS)
    if stdout is None:
        stdout = _tail(workdir / STDOUT) or ""
    return stdout, _tail(workdir / STDERR) or ""


def results_name(user_id: str, competition_id: str, when: datetime) -> str:
    return f"{user_slug(user_id)}_{competition_id}_{when.astimezone(timezone.utc):%Y%m%d_%H%M%S}.jsonl"


def save_results(results_dir: Path | str, user_id: str, competition_id: str, when: datetime, text: str) -> str:
    """Write the results file atomically, never replacing another job's: a taken second moves on by one."""
    for offset in range(3600):
        name = results_name(user_id, competition_id, when + timedelta(seconds=offset))
        if write_new_atomic(Path(results_dir) / name, text):
            return name
    raise FileExistsError(f"no free results file name for {user_slug(user_id)}/{competition_id} near {when}")
