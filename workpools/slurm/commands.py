"""The SLURM command-line tools the worker runs: sbatch, scontrol, sacct, scancel.

Every call is an argv list (never a shell string); the batch script goes to sbatch on stdin.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

import anyio

from workpools.slurm.job import SlurmJob, parse_sacct, parse_scontrol


class SlurmError(RuntimeError):
    """A SLURM tool failed (controller unreachable, job rejected, ...)."""


async def _run(argv: list[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None):
    try:
        return await anyio.run_process(argv, input=stdin, env=env, check=False)
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} not found on PATH: is the SLURM client installed on this worker's host?") from exc


def _failure(result: subprocess.CompletedProcess) -> str:
    return f"{' '.join(result.args[:2])} exited {result.returncode}: {result.stderr.decode(errors='replace').strip()}"


async def submit(script: str, env: Mapping[str, str]) -> str:
    """`sbatch --parsable` the script with `env` exported to the job; return the job id.
    The job starts in the script's `--chdir`, else in this process's working directory."""
    result = await _run(["sbatch", "--parsable", "--export=ALL"], stdin=script.encode(), env=env)
    if result.returncode != 0:
        raise SlurmError(_failure(result))
    return result.stdout.decode().strip().split(";")[0]


async def job(job_id: str) -> SlurmJob | None:
    """The job's state from the controller, or from accounting once the controller forgot it
    (after `MinJobAge`); None if neither knows it. Raises SlurmError if the controller fails."""
    result = await _run(["scontrol", "show", "job", job_id])
    if result.returncode == 0:
        return parse_scontrol(job_id, result.stdout.decode(errors="replace"))
    if b"Invalid job id" not in result.stderr:
        raise SlurmError(_failure(result))
    return await accounting(job_id)


async def accounting(job_id: str) -> SlurmJob | None:
    """The job's end from `sacct` (slurmdbd), else `sacct -c` (jobcomp/filetxt)."""
    fields = ["-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode"]
    for argv in (["sacct", *fields], ["sacct", "-c", *fields]):
        result = await _run(argv)
        if result.returncode == 0 and (found := parse_sacct(job_id, result.stdout.decode(errors="replace"))):
            return found
    return None


async def queued_or_running(array_job_ids: set[str]) -> dict[str, str]:
    """The tasks of these job arrays that SLURM still has queued or running: task id -> state."""
    if not array_job_ids:
        return {}
    result = await _run(["squeue", "--me", "--noheader", "--array", "--format", "%F|%i|%T"])
    if result.returncode != 0:
        raise SlurmError(_failure(result))
    tasks = {}
    for line in result.stdout.decode(errors="replace").splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0] in array_job_ids and parts[2] in ("PENDING", "CONFIGURING", "RUNNING"):
            tasks[parts[1]] = parts[2]
    return tasks


async def cancel(job_id: str) -> None:
    """`scancel` the job (SLURM sends SIGTERM, then SIGKILL after the cluster's KillWait)."""
    result = await _run(["scancel", job_id])
    if result.returncode != 0:
        raise SlurmError(_failure(result))
