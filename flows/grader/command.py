"""The grading command: argv from its template (never a shell), its time budget, and when a job
counts as overdue."""

from __future__ import annotations

import re
import shlex
from datetime import datetime

PLACEHOLDERS = ("solution", "competition_id", "results", "workdir")
DEFAULT_GRADE_COMMAND = "python src/dojo/grade_code.py {solution} {competition_id} {results}"
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


def timeout_for(expected_time: float, factor: float | None = None, floor: float = DEFAULT_TIMEOUT_FLOOR,
                cap: float | None = None) -> float | None:
    """Seconds the grading may take, None for as long as it needs (the default, as the API it
    replaces let multi-day jobs run). Opt-in: `factor` x `expected_time` (at least `floor`),
    and at most `cap` (`--max-job-seconds`)."""
    limits = [max(floor, expected_time * factor)] if factor is not None else []
    limits += [cap] if cap is not None else []
    return min(limits) if limits else None


def is_overdue(expected_time: float, started: datetime | None, ended: datetime | None, now: datetime) -> bool:
    """The command ran (or runs) longer than its `expected_time`: flagged, never killed for it."""
    if started is None:
        return False
    return ((ended or now) - started).total_seconds() > expected_time
