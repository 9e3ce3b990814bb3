"""The `command:` evaluator on its own: real child processes, no Prefect server."""

from __future__ import annotations

import asyncio
import os
import sys

from flows.evaluators.command import CommandEvaluator


def open_files() -> set[str]:
    """What this process's descriptors point to (other threads of the test run open and close
    theirs meanwhile: a count would be flaky)."""
    found = set()
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{descriptor}"))
        except OSError:  # closed meanwhile
            continue
    return found


def test_constructing_an_evaluator_leaks_no_file_descriptor():
    # Failed before the fix: `mkstemp(...)[1]` kept the descriptor open, one per episode.
    evaluators = [CommandEvaluator(f"{sys.executable} -c pass") for _ in range(20)]
    assert not open_files() & {str(evaluator.metrics_file) for evaluator in evaluators}
    for evaluator in evaluators:
        assert evaluator.metrics_file.exists()
        asyncio.run(evaluator.kill())
        assert not evaluator.metrics_file.exists()
