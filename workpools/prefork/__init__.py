"""The `evalq-prefork` work pool: local flow runs forked from a process that preloaded Prefect.

A plain process worker starts `python -m prefect.engine` for every flow run, which costs
about 2 CPU-seconds of imports before the flow does anything: on a 2-core machine that,
not the policy servers, limits a campaign of short episodes. This worker starts a
forkserver that imports Prefect and the evalq flows once; each flow run is a child forked
from it (milliseconds), still one OS process per episode, so a killed episode is one
crashed run and nothing else.
"""

from flows.naming import PREFORK_POOL_TYPE as WORK_POOL_TYPE
from workpools.lazy import lazy_worker

__getattr__, base_job_template = lazy_worker(__name__, "workpools.prefork.worker", "PreforkWorker")
__all__ = ["PreforkWorker", "WORK_POOL_TYPE", "base_job_template"]
