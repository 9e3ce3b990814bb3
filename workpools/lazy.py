"""Work-pool packages that import their worker (and Prefect with it) on first use.

Every `evalq` command loads the command modules of `workpools` (entry points), which live in
these packages: importing a worker class there cost each command, and the embedded server it
may start, about 2 s before anything else.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_worker(package: str, module: str, class_name: str) -> tuple[Callable[[str], Any], Callable[[], dict]]:
    """A package's `__getattr__` (which answers `class_name`) and its `base_job_template()`."""

    def worker_class() -> Any:
        return getattr(importlib.import_module(module), class_name)

    def __getattr__(name: str) -> Any:
        if name == class_name:
            return worker_class()
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def base_job_template() -> dict:
        """Prefect's base job template for this pool type: job configuration and variables schema."""
        return worker_class().get_default_base_job_template()

    return __getattr__, base_job_template
