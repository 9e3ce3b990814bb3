"""The leaderboard: per team and task, the mean of a metric with its 95% interval. Pure.

The interval is Student's t interval for a mean: `mean ± t(0.975, n-1) · s / sqrt(n)`, with `s` the
sample standard deviation (n-1 in the denominator); it needs two episodes. For a 0/1 metric
such as `success` it is the usual large-sample interval of a rate, which may reach past 0 or 1
for small n: read it as a sign of how few episodes there are. Coverage is episodes with the
metric / episodes planned (from jobs.json), so a team cannot climb by leaving episodes out
unseen.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from pydantic import BaseModel

LEVEL = 0.95
INTERVAL = "Student t 95% interval of the mean"


@dataclass(frozen=True)
class Sample:
    """One episode's value of the metric."""

    team: str
    task: str
    value: float


class Row(BaseModel):
    """One team on one task (task "*": the team overall)."""

    team: str
    task: str
    episodes: int
    planned: int | None
    coverage: float | None
    mean: float | None
    low: float | None
    high: float | None


class Board(BaseModel):
    metric: str
    interval: str = INTERVAL
    rows: list[Row]
    """Per task (tasks alphabetical), best mean first."""
    teams: list[Row]
    """Per team overall (all its episodes), best mean first."""
    problems: dict[str, str] = {}
    """Metrics files that could not be used -> why (not fatal)."""


def t_two_sided_probability(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` degrees of freedom (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd
        if df == 1:
            return 2 * theta / math.pi
        term = total = 1.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term = total = 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


@lru_cache(maxsize=None)
def t_critical(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| < t) = level, by bisection (t(0.975, 4) = 2.776...)."""
    low, high = 0.0, 1.0
    while t_two_sided_probability(high, df) < level:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if t_two_sided_probability(middle, df) < level:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def mean_interval(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high); no interval below two values, no mean without values."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_critical(n - 1) * math.sqrt(variance / n)
    return mean, mean - half, mean + half


def make_row(team: str, task: str, values: list[float], planned: int | None) -> Row:
    mean, low, high = mean_interval(values)
    coverage = len(values) / planned if planned else None
    return Row(team=team, task=task, episodes=len(values), planned=planned, coverage=coverage, mean=mean, low=low, high=high)


def rank_key(row: Row) -> tuple:
    """Best mean first; rows without a mean last; then by name."""
    return (row.mean is None, -(row.mean or 0.0), row.team)


def build_board(
    samples: Iterable[Sample], metric: str, planned: dict[tuple[str, str], int] | None = None,
    problems: dict[str, str] | None = None,
) -> Board:
    """Rows per (team, task) and per team; with `planned`, also the teams and tasks planned
    but without any metric yet (0 episodes)."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for sample in samples:
        values[(sample.team, sample.task)].append(sample.value)
    keys = set(values) | set(planned or {})
    rows = [make_row(team, task, values.get((team, task), []), planned.get((team, task)) if planned is not None else None)
            for team, task in keys]
    rows.sort(key=lambda row: (row.task, *rank_key(row)))
    teams = []
    for team in sorted({team for team, _ in keys}):
        team_values = [v for (t, _), vs in sorted(values.items()) if t == team for v in vs]
        team_planned = sum(n for (t, _), n in planned.items() if t == team) if planned is not None else None
        teams.append(make_row(team, "*", team_values, team_planned))
    teams.sort(key=rank_key)
    return Board(metric=metric, rows=rows, teams=teams, problems=dict(sorted((problems or {}).items())))


def metric_value(document: dict, metric: str) -> float | None:
    """The metric as a number (booleans count 1/0); None if absent or not a finite number."""
    value = document.get(metric)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


COLUMNS = ("team", "task", "episodes", "planned", "coverage", "mean", "low", "high")


def cells(row: Row) -> list[str]:
    """A row as text: numbers with 4 decimals, coverage as a percentage, '-' when unknown."""
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    coverage = "-" if row.coverage is None else f"{row.coverage:.0%}"
    planned = "-" if row.planned is None else str(row.planned)
    return [row.team, row.task, str(row.episodes), planned, coverage, number(row.mean), number(row.low), number(row.high)]


def to_csv(board: Board) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in board.rows + board.teams:
        writer.writerow(["" if v is None else v for v in (row.team, row.task, row.episodes, row.planned, row.coverage, row.mean, row.low, row.high)])
    return out.getvalue()


def to_markdown(board: Board) -> str:
    lines = [f"Metric `{board.metric}`: mean and {board.interval}.", ""]
    for title, rows in (("Per team and task", board.rows), ("Per team overall", board.teams)):
        lines += [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
        lines.append("")
    if board.problems:
        lines += ["### Metrics files not used", ""] + [f"- `{path}`: {why}" for path, why in board.problems.items()]
    return "\n".join(lines).rstrip() + "\n"
