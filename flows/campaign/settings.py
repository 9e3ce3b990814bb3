"""The campaign flow's parameters as one model: the contract between the flow
(`flows/campaign/flow.py`), its loop and its outputs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CampaignSettings(BaseModel):
    """The campaign flow's parameters (see `campaign` for their defaults), as its runner and
    report read them."""

    model_config = ConfigDict(extra="forbid")  # a parameter added to the flow must be added here

    jobs_file: str
    resources_file: str
    results_dir: str
    name: str
    evaluator: str
    evaluator_options: dict
    prefetch: int
    max_prefetch: int
    max_in_flight: int | None
    resume_below: int | None
    submit_interval: float
    max_attempts: int
    deployment: str
    stats_interval: float
    tick_seconds: float
    lease_seconds: float
    poll_seconds: float
    timeout_seconds: float
    only: list[str] | None
    planned: int | None = None
    """Jobs in the whole plan (`--only` runs a part of it)."""
    server_wait_seconds: float | None = None
    """How long an episode waits while all its servers are quarantined, then fails; None: forever."""
    paused: bool = False
    """Start with dispatch paused (`--paused`); without it an invocation starts unpaused."""
