"""The GPU-aware local pool, on one shared GPU machine.

GPUs are leases on Prefect global concurrency limits (one per GPU); `evalq submit` queues
commands task-spooler style as runs of the `run-command` flow (`flow.py`), `evalq queue`
(`cli.py`) manages them. Who starts next is `scheduling.py` (pure); how a job notices a
cancel is `stopping.py`. The pool is the `evalq-runner` kind (`workpools/runner`), like the
episodes' local pool: one warm runner (`evalq runner`) runs the queued commands, each in a
process group of its own; `evalq queue worker` (`keeper.py`) keeps that runner alive, started by
`evalq submit` when nothing serves the queue (`service.py`) and stopped by `evalq queue -K`
(`shutdown.py`). task-spooler's habits (leading `NAME=value` words, `--timeout` and its default,
`TS_VISIBLE_DEVICES`, the free-memory threshold) are read in `options.py` and `threshold.py`.
"""

from __future__ import annotations

from workpools.runner import WORK_POOL_TYPE, base_job_template

__all__ = ["WORK_POOL_TYPE", "base_job_template"]
