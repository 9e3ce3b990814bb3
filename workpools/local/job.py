"""One queued command: what `evalq submit` creates and the `run-command` flow runs, and every
name the local queue writes into Prefect (tags, labels, state names, limits), built and parsed here."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

RUN_COMMAND_FLOW = "run-command"
DEPLOYMENT_NAME = "local"
RUN_COMMAND_DEPLOYMENT = f"{RUN_COMMAND_FLOW}/{DEPLOYMENT_NAME}"
COMMAND_TAG = "evalq-command"

# Named Running states a job passes through (non-forced, so a user's cancel always wins)
AWAITING_DEPENDENCIES_STATE = "AwaitingDependencies"
AWAITING_GPUS_STATE = "AwaitingGPUs"
"""Running: dependencies met, in the GPU queue (first in, first out)."""
COMMAND_STATE = "Running"
"""Running: the command runs on its leased GPUs (labels say which, and since when)."""

# Flow-run labels
HOST_LABEL = "evalq.queue.host"
"""The machine whose GPUs the job queues for (set when the job starts waiting)."""
GPUS_LABEL = "evalq.queue.gpus"
"""The GPU indices the command holds, e.g. "0,1" ("" for none)."""
STARTED_LABEL = "evalq.queue.started"
"""When the command started (seconds since the epoch)."""
NONCE_LABEL = "evalq.queue.nonce"
"""Which `evalq submit` created the run (tells a won queue id from an idempotent replay)."""

QUEUE_ID_TAG_PREFIX = "queue-id:"
LAST_ID_VARIABLE = "evalq_queue_last_id"
"""Prefect Variable: the highest queue id handed out (a hint; idempotency keys decide)."""


class CommandJob(BaseModel):
    """A command to run on this machine's GPUs (the `run-command` flow's one parameter)."""

    argv: list[str] = Field(min_length=1, description="Program and arguments; never run through a shell.")
    gpus: int = Field(0, ge=0, description="How many GPUs to lease.")
    gpu_indices: list[int] | None = Field(None, description="Exactly these GPUs (pinned).")
    timeout: float | None = Field(None, gt=0, description="Kill the command after this many seconds.")
    label: str | None = None
    depends_on: list[UUID] = Field(default_factory=list, description="Flow runs that must complete first.")
    seed: int | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (e.g. SEED).")
    cwd: str | None = Field(None, description="Working directory; the submitter's by default.")
    gpu_free_threshold: float = Field(0.9, ge=0, le=1, description="Free memory fraction for a GPU to count as free.")
    queue_id: int | None = Field(None, ge=1, description="The short id `evalq queue` shows (FIFO order).")
    env_file: str | None = Field(None, description="The submitter's environment (JSON, mode 0600); else the worker's.")
    stdout_path: str | None = Field(None, description="The command's stdout file; else the worker's output.")
    stderr_path: str | None = Field(None, description="The command's stderr file; else the worker's output.")

    def run_name(self) -> str:
        name = self.label or self.argv[0].rsplit("/", 1)[-1]
        return name if self.seed is None else f"{name}[seed={self.seed}]"

    def tags(self) -> list[str]:
        tags = ["evalq", COMMAND_TAG, f"gpus:{self.gpus}"]
        if self.queue_id is not None:
            tags.append(queue_id_tag(self.queue_id))
        if self.label:
            tags.append(label_tag(self.label))
        if self.seed is not None:
            tags.append(f"seed:{self.seed}")
        return tags


def label_tag(label: str) -> str:
    return f"label:{label}"


def queue_id_tag(queue_id: int) -> str:
    return f"{QUEUE_ID_TAG_PREFIX}{queue_id}"


def queue_id_from_tags(tags: list[str]) -> int | None:
    """The queue id in a run's tags (None for runs queued before ids existed)."""
    for tag in tags:
        if tag.startswith(QUEUE_ID_TAG_PREFIX) and tag[len(QUEUE_ID_TAG_PREFIX):].isdigit():
            return int(tag[len(QUEUE_ID_TAG_PREFIX):])
    return None


def idempotency_key(queue_id: int) -> str:
    """One flow run per queue id: the server hands back the existing run for a taken id."""
    return f"evalq-queue-{queue_id}"


def format_indices(indices: list[int]) -> str:
    return ",".join(map(str, indices))


def parse_held_gpus(labels: dict) -> list[int] | None:
    """The GPUs a run's command holds, from its labels; None if it has not started one."""
    value = labels.get(GPUS_LABEL)
    if value is None:
        return None
    return [int(part) for part in str(value).split(",") if part.strip().isdigit()]


def gpu_limit(host: str, index: int) -> str:
    """Global concurrency limit (limit 1) standing for one GPU of one machine."""
    return f"evalq:gpu:{host}:{index}"


def slots_limit(host: str) -> str:
    """Global concurrency limit: how many queued commands run at once on one machine (`evalq queue slots`)."""
    return f"evalq:queue-slots:{host}"
