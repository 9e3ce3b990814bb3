"""A results folder's metrics files: `<results>/<team_slug>/metrics/<task>_<instance_id>.json`.

A metrics file is the evaluator's metrics plus an `evalq` block saying where and how they were
produced (`EpisodeProvenance`): written by the episode (`flows/episode.py`), read back by the
campaign (`held_seconds`), reports, leaderboards and evaltui.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, ValidationError

PROVENANCE_KEY = "evalq"


class EpisodeProvenance(BaseModel):
    """The `evalq` block of a metrics file."""

    job_id: str
    team: str
    team_slug: str
    track: str
    task: str
    instance_id: int
    pool: str
    server: str
    """The policy server it played against, `host:port`."""
    campaign: str
    flow_run_id: str | None = None
    evaluator: str
    """The evaluator's kind (`sim`, `command:<program>`, `module:Class`), without its arguments."""
    waited_seconds: float
    """From ready to leased."""
    held_seconds: float
    """How long it held the server."""
    finished_at: float
    """Unix time the metrics were written."""
    video: str | None = None
    """The episode's video beside the metrics file, when it recorded one."""
    peak_rss_mb: float | None = None
    """Peak resident memory (MiB) of the process that ran it, with its children, while it ran:
    shared with the `concurrent_max` episodes in flight then, so an upper bound for this one
    (`flows/runtime/memory.py` says how it is sampled and its limits). None off Linux."""
    rss_at_start_mb: float | None = None
    """The same process's resident memory when the episode started (the peak minus it: a rough share)."""
    concurrent_max: int | None = None
    """Episodes in flight in that process when its peak was sampled."""


def metrics_document(metrics: dict, provenance: EpisodeProvenance) -> dict:
    """The metrics file's content: the evaluator's metrics, then the `evalq` block."""
    return {**metrics, PROVENANCE_KEY: provenance.model_dump(mode="json")}


def read_provenance(path: Path) -> EpisodeProvenance | None:
    """The `evalq` block of a metrics file; None when unreadable or absent."""
    try:
        return EpisodeProvenance.model_validate(json.loads(path.read_text(encoding="utf-8"))[PROVENANCE_KEY])
    except (OSError, ValueError, KeyError, TypeError, ValidationError):
        return None


@dataclass(frozen=True)
class MetricsFile:
    """One parsed metrics file: the evaluator's metrics plus evalq's `evalq` block."""

    path: Path
    team: str
    task: str
    document: dict

    @property
    def evalq(self) -> dict:
        block = self.document.get(PROVENANCE_KEY)
        return block if isinstance(block, dict) else {}


def metrics_paths(results_dir: Path) -> Iterator[Path]:
    """Every `*.json` under `<team>/metrics/`, sorted (temporary files skipped)."""
    for path in sorted(results_dir.glob("*/metrics/*.json")):
        if not path.name.startswith("."):
            yield path


def task_of(path: Path) -> str:
    """`<task>_<instance_id>.json` -> task."""
    return path.stem.rsplit("_", 1)[0]


def read_metrics_files(results_dir: Path | str) -> tuple[list[MetricsFile], dict[str, str]]:
    """The parsed files, and the unreadable ones (path -> why); team and task come from the
    file's `evalq` block, else from its path."""
    results_dir = Path(results_dir)
    parsed, problems = [], {}
    for path in metrics_paths(results_dir):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            problems[str(path)] = f"cannot read: {exc}"
            continue
        except json.JSONDecodeError as exc:
            problems[str(path)] = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            continue
        if not isinstance(document, dict):
            problems[str(path)] = f"expected a JSON object, found {type(document).__name__}"
            continue
        block = document.get(PROVENANCE_KEY) if isinstance(document.get(PROVENANCE_KEY), dict) else {}
        team = str(block.get("team_slug") or path.parent.parent.name)
        task = str(block.get("task") or task_of(path))
        parsed.append(MetricsFile(path, team, task, document))
    return parsed, problems


def board_from_results(results_dir: Path | str, metric: str, jobs: list | None = None):
    """The leaderboard of `metric` over the results folder; with `jobs`, over their episodes
    only, with coverage against them."""
    from collections import Counter

    from flows.results.leaderboard import Sample, build_board, metric_value

    files, problems = read_metrics_files(results_dir)
    if jobs is not None:  # only the planned episodes count towards coverage
        wanted = {job.metrics_path(results_dir).resolve() for job in jobs}
        files = [file for file in files if file.path.resolve() in wanted]
        problems = {path: why for path, why in problems.items() if Path(path).resolve() in wanted}
    samples = []
    for file in files:
        value = metric_value(file.document, metric)
        if value is None:
            problems[str(file.path)] = f"no numeric {metric!r}"
        else:
            samples.append(Sample(file.team, file.task, value))
    planned = Counter((job.payload.team_slug, job.payload.task) for job in jobs) if jobs is not None else None
    return build_board(samples, metric, planned, problems)
