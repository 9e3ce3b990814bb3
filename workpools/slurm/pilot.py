"""Warm runners on SLURM ("pilot jobs"): one sbatch job array, one `evalq runner` per array task.

The per-episode `evalq-slurm` pool pays the queue wait for every episode; a runner array pays
it once per node: each task runs a runner on a pool of type `evalq-runner`, takes episode
after episode, and exits 0 after its idle timeout. `render` fills `runner-array.sbatch`
(pure); `submit` hands it to `sbatch --parsable --export=ALL` as an argv list, the script on
stdin, so PREFECT_API_URL reaches the runners from the submitting environment.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from workpools.slurm import script
from workpools.slurm.variables import SlurmOptions, _one_line

TEMPLATE = Path(__file__).with_name("runner-array.sbatch")
LOG_NAME = "%x-%A_%a.log"
"""One log per array task: job name, array job id, task index."""


class RunnerArray(SlurmOptions):
    """What one job array of runners needs; the SLURM side is the `evalq-slurm` pool's options."""

    pool: str = Field(description="Work pool of type evalq-runner whose flow runs the runners take.")
    work_queues: list[str] = Field(default_factory=list, description="Only these queues of the pool.")
    nodes: int = Field(ge=1, le=10_000, description="Array tasks: runners, one per node they land on.")
    slots: int = Field(ge=1, description="Flow runs each runner runs at once.")
    idle_timeout: float = Field(gt=0, description="A runner exits 0 after this many seconds without work.")
    log_dir: Path = Field(description="Directory of the per-task logs (must exist when the job starts).")
    job_name: str = Field(default="evalq-runner", min_length=1)
    runner_command: list[str] = Field(
        default_factory=lambda: [sys.executable, "-m", "flows.cli"], min_length=1,
        description="How the nodes run evalq (default: this interpreter, on a shared filesystem).",
    )

    @field_validator("pool", "job_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return _one_line(value)

    @field_validator("work_queues", "runner_command")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for value in values:
            _one_line(value)
        return values

    @model_validator(mode="after")
    def _absolute_logs(self) -> "RunnerArray":
        self.log_dir = Path(_one_line(str(self.log_dir))).absolute()  # the job may start elsewhere (--chdir)
        if self.output is None:
            self.output = str(self.log_dir / LOG_NAME)
        return self

    def runner_argv(self) -> list[str]:
        """`evalq runner ...` for one task (its `--name` is added in the script, from SLURM's ids)."""
        queues = [word for queue in self.work_queues for word in ("--work-queue", queue)]
        return [*self.runner_command, "runner", "--pool", self.pool, *queues,
                "--slots", str(self.slots), "--idle-timeout", f"{self.idle_timeout:g}"]


def render(array: RunnerArray, template: str | None = None) -> str:
    """The batch script: quoted `#SBATCH` lines (with `--array`), setup lines, `exec` of the runner."""
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    directives = script.directives(array, job_name=array.job_name)
    directives.insert(1, f"#SBATCH --array=0-{array.nodes - 1}")
    setup = "\n".join(["# setup", *array.setup, ""]) if array.setup else ""
    return (text.replace("@DIRECTIVES@", "\n".join(directives))
            .replace("@SETUP@\n", setup)
            .replace("@RUNNER@", shlex.join(array.runner_argv())))


def log_path(array: RunnerArray, job_id: str, task: int) -> Path:
    """Where task `task` of array job `job_id` logs (SLURM's `%x`, `%A`, `%a` filled in)."""
    name = str(array.output).replace("%x", array.job_name).replace("%A", job_id).replace("%a", str(task))
    return Path(name)


async def submit(array: RunnerArray, env: dict[str, str]) -> str:
    """`sbatch` the rendered array with `env` exported; returns the array's job id."""
    from workpools.slurm import commands

    return await commands.submit(render(array), env)
