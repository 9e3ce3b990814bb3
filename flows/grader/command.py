"""The grading command: argv from its template (never a shell), and the job's timeout."""

from __future__ import annotations

import re
import shlex

PLACEHOLDERS = ("solution", "competition_id", "results", "workdir")
DEFAULT_GRADE_COMMAND = "python src/dojo/grade_code.py {solution} {competition_id} {results}"
DEFAULT_TIMEOUT_FACTOR = 2.0
DEFAULT_TIMEOUT_FLOOR = 60.0
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def split_template(template: str) -> list[str]:
    """Split `--grade-command` once, like a shell would, but run nothing; ValueError if unusable."""
    argv = shlex.split(template)
    if not argv:
        raise ValueError("empty command")
    unknown = {name for part in argv for name in re.findall(r"\{(\w+)\}", part)} - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; known: {', '.join(PLACEHOLDERS)}")
    return argv


def render_argv(template: list[str], values: dict[str, str]) -> list[str]:
    """Each element with its placeholders replaced in one pass (a value is never expanded again)."""
    return [_PLACEHOLDER.sub(lambda match: values[match.group(1)], part) for part in template]


def timeout_for(expected_time: float, factor: float = DEFAULT_TIMEOUT_FACTOR, floor: float = DEFAULT_TIMEOUT_FLOOR) -> float:
    """Seconds the grading may take: `expected_time` x `factor`, at least `floor`."""
    return max(floor, expected_time * factor)
