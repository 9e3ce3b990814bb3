"""What a SLURM work pool lets deployments set: the template variables and the job configuration.

`SlurmVariables` is the JSON schema shown in the Prefect UI (the `variables` half of the
pool's base job template); `SlurmJobConfiguration` is what the worker gets for one flow
run after Prefect filled the template with the pool's defaults and the deployment's and
flow run's `job_variables`. Every field maps to one `#SBATCH` option (see `script.py`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

from prefect.utilities.processutils import command_to_string
from prefect.workers.base import BaseJobConfiguration, BaseVariables
from pydantic import BaseModel, Field, ValidationInfo, field_validator

FORMATS = {
    "time_limit": (
        re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}|UNLIMITED|INFINITE"),
        "a SLURM time limit (e.g. 30, 1:30:00, 2-00:00:00)",
    ),
    "memory": (re.compile(r"\d+[KMGT]?"), "a SLURM memory size (e.g. 4000, 16G)"),
}
"""Values SLURM accepts for `--time` (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) and `--mem`."""


def _one_line(value):
    """`value` unchanged if its text has no line break or NUL (a line break would end an `#SBATCH` line)."""
    if value is not None and any(char in str(value) for char in "\n\r\0"):
        raise ValueError("must be a single line")
    return value


class SlurmOptions(BaseModel):
    """The SLURM side of a job: one field per `#SBATCH` option, plus setup lines and polling."""

    partition: Optional[str] = Field(
        default=None, description="SLURM partition (`--partition`); the cluster default if empty."
    )
    time_limit: Optional[str] = Field(
        default=None, title="Time limit",
        description="Wall-clock limit (`--time`), e.g. `30` (minutes), `1:30:00`, `2-00:00:00`.",
    )
    cpus_per_task: Optional[int] = Field(
        default=None, ge=1, title="CPUs", description="CPUs for the flow run (`--cpus-per-task`)."
    )
    memory: Optional[str] = Field(default=None, description="Memory per node (`--mem`), e.g. `16G`.")
    gpus: Optional[int] = Field(
        default=None, ge=0, title="GPUs",
        description="GPUs to allocate (`--gres=gpu[:type]:N`); SLURM sets CUDA_VISIBLE_DEVICES.",
    )
    gpu_type: Optional[str] = Field(
        default=None, title="GPU type", description="GPU type in the gres request, e.g. `a100`."
    )
    gres: Optional[str] = Field(default=None, title="Other gres", description="Other generic resources, added to `--gres`.")
    account: Optional[str] = Field(default=None, description="Account to charge (`--account`).")
    qos: Optional[str] = Field(default=None, title="QoS", description="Quality of service (`--qos`).")
    constraint: Optional[str] = Field(default=None, description="Node features required (`--constraint`).")
    requeue: bool = Field(
        default=False,
        description=(
            "Let SLURM requeue the job after a node failure or preemption; it then runs the same flow run again."
            " Off by default: a Crashed flow run is requeued by the campaign, as a new attempt."
        ),
    )
    extra_sbatch: list[str] = Field(
        default_factory=list,
        title="Extra #SBATCH options",
        description="More sbatch options, one per item, written as `#SBATCH <item>`, e.g. `--exclusive`.",
    )
    setup: list[str] = Field(
        default_factory=list,
        title="Setup lines",
        description="Shell lines run before the flow run, e.g. `module load cuda/12`, `source venv/bin/activate`.",
    )
    output: Optional[str] = Field(
        default=None,
        description="Standard output path (`--output`); SLURM patterns such as `%j` work. SLURM's default if empty.",
    )
    error: Optional[str] = Field(
        default=None, description="Standard error path (`--error`); merged into the output if empty."
    )
    working_dir: Optional[Path] = Field(
        default=None, title="Working directory", description="Directory the job starts in (`--chdir`)."
    )
    poll_seconds: float = Field(
        default=10.0, gt=0, title="Poll interval", description="Seconds between checks of the SLURM job's state."
    )

    @field_validator("partition", "account", "qos", "constraint", "gres", "gpu_type", "output", "error",
                     "working_dir")
    @classmethod
    def _single_line(cls, value):
        return _one_line(value)

    @field_validator("time_limit", "memory")
    @classmethod
    def _format(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern, what = FORMATS[info.field_name]
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    @field_validator("setup")
    @classmethod
    def _lines(cls, values: list[str]) -> list[str]:
        for value in values:
            _one_line(value)
        return values

    @field_validator("extra_sbatch")
    @classmethod
    def _options(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _one_line(value).startswith("-"):
                raise ValueError(f"{value!r} is not an sbatch option (e.g. --exclusive, --nice=10)")
        return values


class SlurmVariables(BaseVariables, SlurmOptions):
    """Template variables of a SLURM work pool (one SLURM batch job per flow run)."""


class SlurmJobConfiguration(BaseJobConfiguration, SlurmOptions):
    """One flow run's SLURM job, rendered from the pool's base job template."""

    @staticmethod
    def _base_flow_run_command() -> str:
        """Run the flow in this worker's interpreter unless `command` says otherwise
        (e.g. `python -m prefect.engine` after setup lines activate another environment)."""
        return command_to_string([sys.executable, "-m", "prefect.engine"])
