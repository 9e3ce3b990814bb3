"""One queued command: what `evalq submit` creates and the `run-command` flow runs. Every name
the local queue writes into Prefect (tags, labels, state names, limits) is built and parsed in
`workpools/local/naming.py` (re-exported here for the queue's modules)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

from flows.naming import TAG  # noqa: F401  (re-exported)
from workpools.local.naming import (  # noqa: F401  (re-exported)
    AWAITING_DEPENDENCIES_STATE,
    AWAITING_GPUS_STATE,
    COMMAND_STATE,
    COMMAND_TAG,
    GPUS_LABEL,
    HOST_LABEL,
    LAST_ID_VARIABLE,
    NONCE_LABEL,
    QUEUE_ID_TAG_PREFIX,
    RUN_COMMAND_DEPLOYMENT,
    RUN_COMMAND_DEPLOYMENT_NAME,
    RUN_COMMAND_FLOW,
    STARTED_LABEL,
    format_indices,
    gpu_limit,
    gpus_tag,
    label_tag,
    parse_held_gpus,
    queue_id_from_tags,
    queue_id_tag,
    queue_idempotency_key,
    seed_tag,
    slots_limit,
)


class CommandJob(BaseModel):
    """A command to run on this machine's GPUs (the `run-command` flow's one parameter)."""

    argv: list[str] = Field(min_length=1, description="Program and arguments; never run through a shell.")
    gpus: int = Field(0, ge=0, description="How many GPUs to lease.")
    gpu_indices: list[int] | None = Field(None, description="Exactly these GPUs (pinned).")
    timeout: float | None = Field(None, gt=0, description="Kill the command after this many seconds.")
    label: str | None = None
    depends_on: list[UUID] = Field(default_factory=list, description="Flow runs that must complete first (`--after-success`).")
    after: list[UUID] = Field(default_factory=list, description="Flow runs that must end first, however they end (`-D`).")
    seed: int | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (SEED, the command's NAME=value words).")
    cwd: str | None = Field(None, description="Working directory; the submitter's by default.")
    gpu_free_threshold: float | None = Field(
        None, ge=0, le=1, description="Free memory fraction for a GPU to count as free; None: the host's (`evalq queue gpu-free-threshold`).")
    visible_gpus: list[int] | None = Field(
        None, description="The GPUs the queue may hand it (TS_VISIBLE_DEVICES / EVALQ_VISIBLE_DEVICES at submit); None: all.")
    queue_id: int | None = Field(None, ge=1, description="The short id `evalq queue` shows (FIFO order).")
    env_file: str | None = Field(None, description="The submitter's environment (JSON, mode 0600); else the worker's.")
    stdout_path: str | None = Field(None, description="The command's stdout file; else the worker's output.")
    stderr_path: str | None = Field(None, description="The command's stderr file; else the worker's output.")

    @property
    def waits_for(self) -> list[UUID]:
        """Every run it waits for, strictly or not."""
        return [*self.depends_on, *self.after]

    def run_name(self) -> str:
        name = self.label or self.argv[0].rsplit("/", 1)[-1]
        return name if self.seed is None else f"{name}[seed={self.seed}]"

    def tags(self) -> list[str]:
        tags = [TAG, COMMAND_TAG, gpus_tag(self.gpus)]
        if self.queue_id is not None:
            tags.append(queue_id_tag(self.queue_id))
        if self.label:
            tags.append(label_tag(self.label))
        if self.seed is not None:
            tags.append(seed_tag(self.seed))
        return tags
