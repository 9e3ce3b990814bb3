"""The parameters of the flows that dispatch a campaign's jobs, as models: the contract between
a flow (`flows/campaign/flow.py`, `flows/batch/flow.py`), the loop and the outputs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


def resume_threshold(max_in_flight: int | None, resume_at: int | None, resume_below: int | None) -> int | None:
    """How many episodes in flight dispatch resumes at, once stopped at `max_in_flight`: `--resume-at
    M` (at most M; 0: once all have ended, as the batch submitter's `--resume_threshold 0`), or
    its alias `--resume-below M` (fewer than M); by default below `max_in_flight`. None without
    `max_in_flight`. `ValueError` (one line naming the option) for a value that can never resume."""
    if resume_at is not None and resume_below is not None:
        raise ValueError("--resume-at and --resume-below say the same thing: give one")
    given = "--resume-at" if resume_at is not None else "--resume-below" if resume_below is not None else None
    if max_in_flight is None:
        if given:
            raise ValueError(f"{given} needs --max-in-flight: the number at which dispatch stops")
        return None
    if resume_below is not None:
        if resume_below < 1:
            raise ValueError(f"--resume-below {resume_below}: dispatch would never resume (fewer than {resume_below} "
                             "episodes in flight); --resume-at 0 resumes once all have ended")
        if resume_below > max_in_flight:
            raise ValueError(f"--resume-below {resume_below}: at most --max-in-flight {max_in_flight} (a pause that "
                             "resumes at once does nothing)")
        return resume_below - 1
    if resume_at is not None:
        if resume_at < 0:
            raise ValueError(f"--resume-at {resume_at}: dispatch would never resume; 0 resumes once all have ended")
        if resume_at >= max_in_flight:
            raise ValueError(f"--resume-at {resume_at}: below --max-in-flight {max_in_flight} (a pause that resumes "
                             "at once does nothing)")
        return resume_at
    return max_in_flight - 1


class DispatchSettings(BaseModel):
    """What the campaign's loop needs whatever its jobs are: the part a campaign's settings
    (`CampaignSettings`) and a batch's (`flows/batch/settings.py`) share."""

    model_config = ConfigDict(extra="forbid")  # a parameter added to a flow must be added here

    name: str
    results_dir: str
    prefetch: int
    """Jobs per server loading ahead, at least (the tuner's floor)."""
    max_prefetch: int
    max_in_flight: int | None
    resume_at: int | None = None
    resume_below: int | None = None
    """`resume_at + 1`, the older spelling (`--resume-below`); give one of the two."""
    submit_interval: float
    """Seconds between two run creations (the batch submitter's `--wait_seconds`)."""
    max_attempts: int
    deployment: str
    stats_interval: float
    tick_seconds: float
    timeout_seconds: float
    paused: bool = False
    """Start with dispatch paused (`--paused`); without it an invocation starts unpaused."""
    count: Literal["own", "pool"] = "own"
    """What the thresholds count: this campaign's runs in flight, or every run in flight on the
    deployment's work pool (`--count pool`), as the batch submitter counted its cluster's."""

    @model_validator(mode="after")
    def _thresholds_can_resume(self) -> "DispatchSettings":
        self.resume_threshold  # noqa: B018 - raises for thresholds that never resume
        return self

    @property
    def resume_threshold(self) -> int | None:
        """Jobs in flight at which a stopped dispatch resumes (`resume_threshold`)."""
        return resume_threshold(self.max_in_flight, self.resume_at, self.resume_below)

    @property
    def revive_cancelled(self) -> bool:
        """Whether jobs an earlier invocation left cancelled run again."""
        return False


class CampaignSettings(DispatchSettings):
    """The campaign flow's parameters (see `campaign` for their defaults), as its runner and
    report read them."""

    jobs_file: str
    resources_file: str
    evaluator: str
    evaluator_options: dict
    lease_seconds: float
    poll_seconds: float
    only: list[str] | None
    planned: int | None = None
    """Jobs in the whole plan (`--only` runs a part of it)."""
    server_wait_seconds: float | None = None
    """How long an episode waits while all its servers are quarantined, then fails; None: forever."""

    @property
    def revive_cancelled(self) -> bool:
        """Episodes named with `--only` run again, cancelled before or not."""
        return self.only is not None
