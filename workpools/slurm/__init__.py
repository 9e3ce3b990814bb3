"""SLURM work pool: a Prefect worker type that runs each flow run as one sbatch job.

`WORK_POOL_TYPE` is the worker type (`prefect worker start --type evalq-slurm`) and
`base_job_template()` the pool's default base job template; `evalq workpools apply` uses both.
Modules: `variables` (template variables), `script` (batch script, pure), `job` (SLURM job
states), `commands` (sbatch/scontrol/sacct/scancel), `worker` (the Prefect worker); `pilot`
and `runner-array.sbatch`: warm runners as one job array instead (`evalq workpools slurm-runners`).
"""

from __future__ import annotations

from typing import Any

from workpools.slurm.worker import WORK_POOL_TYPE, SlurmWorker

__all__ = ["WORK_POOL_TYPE", "SlurmWorker", "base_job_template"]


def base_job_template() -> dict[str, Any]:
    """Prefect's base job template for a SLURM work pool: job configuration and variables schema."""
    return SlurmWorker.get_default_base_job_template()
