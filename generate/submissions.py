"""Challenge submissions: read them, merge resubmissions, rank entrants per track.

A submission is a `*.json` file with `team`, `overall_scores.q_score` and
`per_task_scores.q_score`. A team slug is one entrant: its best submission counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from slugify import slugify

from generate.errors import InputError, require_dir
from generate.jsonio import read_model
from generate.models import TRACKS, Track

PRIVILEGED_PREFIX = "privileged."
"""A submission file named `privileged.*.json` without a `track` field is privileged."""

Score = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _OverallScores(BaseModel):
    q_score: Score


class _PerTaskScores(BaseModel):
    q_score: dict[str, Score]


class SubmissionFile(BaseModel):
    """The fields of a submission file we use; everything else is ignored."""

    model_config = ConfigDict(extra="ignore")

    team: str = Field(min_length=1, strict=True)
    overall_scores: _OverallScores
    per_task_scores: _PerTaskScores
    track: Track | None = None


def team_slug(team: str) -> str:
    """The only form of a team's name used in paths and pool names."""
    return slugify(team, separator="_")


@dataclass(frozen=True)
class Entrant:
    """One team's counting submission, and where it ranks in its track."""

    team: str
    team_slug: str
    track: Track
    q_score: float
    task_scores: Mapping[str, float]
    source: Path
    """The submission file that counts."""
    rank: int = 0
    """1-based rank within the track (0 until ranked)."""
    selected: bool = False
    """Among the top k of its track."""

    def tasks(self, all_tasks: bool = False) -> list[str]:
        """The tasks this entrant gets jobs for: q_score > 0, or every listed task."""
        return sorted(task for task, score in self.task_scores.items() if all_tasks or score > 0)


@dataclass(frozen=True)
class Ranking:
    """Entrants ordered by track (standard first) then rank, and what was set aside."""

    entrants: list[Entrant]
    warnings: list[str]

    @property
    def selected(self) -> list[Entrant]:
        return [entrant for entrant in self.entrants if entrant.selected]

    def by_slug(self) -> dict[str, Entrant]:
        return {entrant.team_slug: entrant for entrant in self.entrants}


def read_submission(path: Path) -> Entrant:
    """Read one submission file into an unranked entrant."""
    data = read_model(path, SubmissionFile)
    slug = team_slug(data.team)
    if not slug:
        raise InputError(path, f"team: {data.team!r} has no letters or digits to make a slug from")
    track = data.track or ("privileged" if path.name.startswith(PRIVILEGED_PREFIX) else "standard")
    return Entrant(
        team=data.team,
        team_slug=slug,
        track=track,
        q_score=data.overall_scores.q_score,
        task_scores=dict(data.per_task_scores.q_score),
        source=path,
    )


def read_submissions(submissions_dir: Path) -> list[Entrant]:
    """Every `*.json` file of the folder, in file-name order; none at all is an error."""
    paths = sorted(path for path in require_dir(submissions_dir).glob("*.json") if path.is_file())
    if not paths:
        raise InputError(submissions_dir, "no submission files (*.json): nothing to evaluate")
    return [read_submission(path) for path in paths]


def rank_entrants(submissions: Iterable[Entrant], top_k: int) -> Ranking:
    """Keep each slug's best submission, rank per track, select the top k of each."""
    best: dict[str, list[Entrant]] = {}
    for submission in sorted(submissions, key=lambda s: (-s.q_score, s.source.name)):
        best.setdefault(submission.team_slug, []).append(submission)
    warnings = [_resubmission_warning(slug, entries) for slug, entries in best.items() if len(entries) > 1]
    ranked: list[Entrant] = []
    for track in TRACKS:
        in_track = sorted((e[0] for e in best.values() if e[0].track == track), key=lambda e: (-e.q_score, e.team_slug))
        ranked += [dataclasses.replace(e, rank=rank, selected=rank <= top_k) for rank, e in enumerate(in_track, 1)]
    return Ranking(entrants=ranked, warnings=sorted(warnings))


def _resubmission_warning(slug: str, entries: list[Entrant]) -> str:
    kept, *ignored = entries
    others = ", ".join(f"{e.source.name} (q {e.q_score:g})" for e in ignored)
    return f"team {slug}: {len(entries)} submissions; {kept.source.name} (q {kept.q_score:g}) counts, ignored {others}"
