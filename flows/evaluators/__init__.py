"""Evaluators: what loads a simulator and plays an episode against a policy server.

`load_evaluator(spec, options)` accepts `sim`, `command:<argv template>` or
`package.module:Class` (constructed with the options as keyword arguments).

May import: `flows/naming.py` only (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from flows.evaluators.base import EvaluationError, Evaluator, Metrics, ServerUnavailable

__all__ = ["EvaluationError", "Evaluator", "Metrics", "ServerUnavailable", "load_evaluator", "call"]


def load_evaluator(spec: str, options: dict[str, Any] | None = None, logger=None) -> Evaluator:
    """Build the evaluator named by `spec`; a bad spec raises `EvaluationError`."""
    options = dict(options or {})
    if spec == "sim":
        from flows.evaluators.sim import SimEvaluator

        return _construct(SimEvaluator, options, spec)
    if spec.startswith("command:"):
        from flows.evaluators.command import CommandEvaluator

        return _construct(CommandEvaluator, {"argv": spec[len("command:"):], "logger": logger, **options}, spec)
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise EvaluationError(f"evaluator {spec!r}: expected sim, command:<argv> or package.module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise EvaluationError(f"evaluator {spec!r}: {exc}") from None
    evaluator = _construct(cls, options, spec)
    if not isinstance(evaluator, Evaluator):
        raise EvaluationError(f"evaluator {spec!r}: has no prepare(job) and run(job, server)")
    return evaluator


def _construct(cls, options: dict[str, Any], spec: str):
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"evaluator {spec!r}: bad options: {exc}") from None


async def call(method, *args):
    """Call an evaluator method that may be sync (run in a thread) or async."""
    import anyio

    if inspect.iscoroutinefunction(method):
        return await method(*args)
    result = await anyio.to_thread.run_sync(method, *args)
    return await result if inspect.isawaitable(result) else result
