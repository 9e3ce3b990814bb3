"""The `command:` evaluator on its own: real child processes, no Prefect server."""

from __future__ import annotations

import asyncio
import os
import sys

from flows.evaluators.command import CommandEvaluator


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_constructing_an_evaluator_leaks_no_file_descriptor():
    # Failed before the fix: `mkstemp(...)[1]` kept the descriptor open, one per episode.
    before = open_descriptors()
    evaluators = [CommandEvaluator(f"{sys.executable} -c pass") for _ in range(20)]
    assert open_descriptors() == before
    for evaluator in evaluators:
        assert evaluator.metrics_file.exists()
        asyncio.run(evaluator.kill())
        assert not evaluator.metrics_file.exists()
