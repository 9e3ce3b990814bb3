"""An episode's video: the name its evaluator writes to, and moving it in place beside the metrics.

Evaluators that record videos declare an attribute `video_path` (None until set). Before
`prepare(job)` the episode sets it to a temporary name in the video's final folder
(`.<task>_<id>.<hex>.tmp.mp4`, `{video_path}` in a `command:` template). After a successful
run a video written there is renamed in one step to `Job.video_path(results_dir)`
(`<results>/<team_slug>/videos/<user>/<task>_<instance_id>.mp4`), before the metrics are
written, so readers never see a partial video and a metrics file's `evalq.video` exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from generate.jsonio import move_into_place, temp_path_beside
from generate.models import Job


@dataclass(frozen=True)
class EpisodeVideo:
    final: Path
    partial: Path
    """The temporary name the evaluator writes to."""

    @classmethod
    def for_job(cls, job: Job, results_dir: Path | str) -> "EpisodeVideo":
        final = job.video_path(results_dir)
        return cls(final=final, partial=temp_path_beside(final))

    def offer_to(self, evaluator: object) -> None:
        """Tell an evaluator that declares `video_path` where to write its video."""
        if hasattr(evaluator, "video_path"):
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            evaluator.video_path = self.partial

    def publish(self, replace: bool) -> str | None:
        """Move a written video into place: its final path, or None if none was written.

        Without `replace` a video already there (another run's) is kept.
        """
        if not self.partial.is_file():
            return None
        move_into_place(self.partial, self.final, replace=replace)
        return str(self.final)

    def discard(self) -> None:
        """Remove what a failed or cancelled run left at the temporary name."""
        self.partial.unlink(missing_ok=True)
