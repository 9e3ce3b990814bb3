"""SLURM work pool: a Prefect worker type that runs each flow run as one sbatch job.

`WORK_POOL_TYPE` is the worker type (`prefect worker start --type evalq-slurm`) and
`base_job_template()` the pool's default base job template; `evalq workpools apply` uses both.
Modules: `variables` (template variables), `script` (batch script, pure), `job` (SLURM job
states), `commands` (sbatch/scontrol/sacct/scancel), `worker` (the Prefect worker); `pilot`
and `runner-array.sbatch`: warm runners as one job array instead (`evalq workpools slurm-runners`),
`keeper`: pilots resubmitted while their pool has work (`--keep N`).
"""

from flows.naming import SLURM_POOL_TYPE as WORK_POOL_TYPE
from workpools.lazy import lazy_worker

__getattr__, base_job_template = lazy_worker(__name__, "workpools.slurm.worker", "SlurmWorker")
__all__ = ["WORK_POOL_TYPE", "SlurmWorker", "base_job_template"]
