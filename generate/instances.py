"""Test instances: `test_instances/<task>/*.json`, one file per episode setup.

An instance's id comes from its file name: drop `_template-tro_state.json` (or
`.json`), then take the integer after the last `_`, e.g.
`pick_cube_7_template-tro_state.json` -> 7 and `pick_cube_12.json` -> 12.

Paths are made absolute when they are read (against the working directory of
`evalq generate`): a job names a file that a runner started in any directory, or on
another node of a shared filesystem, can open.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from generate.errors import InputError, require_dir

TEMPLATE_SUFFIX = "_template-tro_state.json"
_ID = re.compile(r"_([0-9]+)")


@dataclass(frozen=True)
class Instance:
    """One instance file of a task."""

    task: str
    instance_id: int
    basename: str
    path: str
    """The file's absolute path (symlinks kept, `..` folded)."""


def instance_id(basename: str) -> int | None:
    """The id in an instance file name, or None when it has none."""
    suffix = TEMPLATE_SUFFIX if basename.endswith(TEMPLATE_SUFFIX) else ".json"
    stem = basename[: -len(suffix)] if basename.endswith(suffix) else basename
    underscore = stem.rfind("_")
    match = _ID.fullmatch(stem[underscore:]) if underscore >= 0 else None
    return int(match.group(1)) if match else None


def read_task(task_dir: Path) -> list[Instance]:
    """The instances of one task folder, by id; a nameless or repeated id is an error."""
    by_id: dict[int, Instance] = {}
    for path in sorted(p for p in task_dir.glob("*.json") if p.is_file()):
        number = instance_id(path.name)
        if number is None:
            raise InputError(path, f'no instance id in the name (an integer after the last "_", e.g. {task_dir.name}_3{TEMPLATE_SUFFIX})')
        if number in by_id:
            raise InputError(path, f"instance id {number} is also the id of {by_id[number].basename}")
        by_id[number] = Instance(task=task_dir.name, instance_id=number, basename=path.name, path=os.path.abspath(path))
    return [by_id[number] for number in sorted(by_id)]


def read_instances(test_instances_dir: Path) -> dict[str, list[Instance]]:
    """Every task folder's instances, keyed by task name; no instance at all is an error."""
    task_dirs = sorted(p for p in require_dir(test_instances_dir).iterdir() if p.is_dir())
    instances = {task_dir.name: read_task(task_dir) for task_dir in task_dirs}
    if not any(instances.values()):
        raise InputError(test_instances_dir, "no instance files (<task>/*.json): nothing to evaluate")
    return instances
