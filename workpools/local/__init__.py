"""The GPU-aware local pool, on one shared GPU machine.

GPUs are leases on Prefect global concurrency limits (one per GPU); `evalq submit` queues
commands task-spooler style as runs of the `run-command` flow (`flow.py`), `evalq queue`
(`cli.py`) manages them. Who starts next is `scheduling.py` (pure); how a job notices a
cancel is `stopping.py`. The pool is the `evalq-runner` kind (`workpools/runner`), like the
episodes' local pool: one warm runner (`evalq runner`) runs the queued commands, each in a
process group of its own; `evalq queue worker` (`keeper.py`) keeps that runner alive.
"""

from __future__ import annotations

from workpools.runner import WORK_POOL_TYPE, base_job_template

__all__ = ["WORK_POOL_TYPE", "base_job_template"]
