"""The pool kinds evalq knows: each is a package exposing `WORK_POOL_TYPE` and `base_job_template()`."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from flows.naming import LOCAL_WORK_POOL


@dataclass(frozen=True)
class PoolKind:
    kind: str
    default_name: str
    module: str

    def load(self) -> ModuleType | None:
        """The kind's package, or None while it is not written (or its extra not installed)."""
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name and self.module.startswith(exc.name):
                return None
            raise


KINDS: dict[str, PoolKind] = {
    kind.kind: kind
    for kind in (
        PoolKind("local", LOCAL_WORK_POOL, "workpools.local"),
        PoolKind("slurm", "evalq-slurm", "workpools.slurm"),
        PoolKind("kubernetes", "evalq-kubernetes", "workpools.kubernetes"),
        PoolKind("runner", "evalq-runner", "workpools.runner"),  # warm runners: SLURM arrays, Kubernetes Jobs
    )
}
