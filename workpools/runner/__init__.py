"""The `evalq-runner` work pool: a warm runner executes flow runs inside one long-lived process.

A process worker pays a process start, `import prefect` and an engine start for every flow
run, and the worker's submission path (deployment read, job configuration, Submitting,
labels) before it: seconds per episode on a 2-core machine. A runner claims a scheduled
run with one Pending proposal and runs it as an asyncio task next to the others, in a
process that already imported Prefect and the flows. Each run is still its own flow run
with its states, logs, heartbeats and cancellation. A claim (`claims.py`) is never left half
made: a stopping runner hands back what it claimed and did not start; a killed runner stops
heartbeating and the campaign settles its runs (`flows/campaign/orphans.py`).

Start one per node: `evalq runner --pool P --slots N [--idle-timeout S]`, or the Prefect
way, `prefect worker start --pool P --type evalq-runner --limit N`.
"""

from flows.naming import RUNNER_POOL_TYPE as WORK_POOL_TYPE
from workpools.lazy import lazy_worker

__getattr__, base_job_template = lazy_worker(__name__, "workpools.runner.worker", "RunnerWorker")
__all__ = ["RunnerWorker", "WORK_POOL_TYPE", "base_job_template"]
