"""Names the local GPU queue (`evalq submit`, `evalq queue`) writes into Prefect: its flow and
deployment, tags, labels, state names and limits, built and parsed here (as `flows/naming.py`
does for episodes and campaigns)."""

from __future__ import annotations

from functools import partial

from flows.naming import key_tag

RUN_COMMAND_FLOW = "run-command"
RUN_COMMAND_DEPLOYMENT_NAME = "local"
RUN_COMMAND_DEPLOYMENT = f"{RUN_COMMAND_FLOW}/{RUN_COMMAND_DEPLOYMENT_NAME}"
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


gpus_tag = partial(key_tag, "gpus")
seed_tag = partial(key_tag, "seed")
label_tag = partial(key_tag, "label")


def queue_id_tag(queue_id: int) -> str:
    return f"{QUEUE_ID_TAG_PREFIX}{queue_id}"


def queue_id_from_tags(tags: list[str]) -> int | None:
    """The queue id in a run's tags (None for runs queued before ids existed)."""
    for tag in tags:
        if tag.startswith(QUEUE_ID_TAG_PREFIX) and tag[len(QUEUE_ID_TAG_PREFIX):].isdigit():
            return int(tag[len(QUEUE_ID_TAG_PREFIX):])
    return None


def queue_idempotency_key(queue_id: int) -> str:
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


def gpu_free_variable(host: str) -> str:
    """Prefect Variable: the machine's default free-memory threshold (`evalq queue gpu-free-threshold`)."""
    from slugify import slugify

    return f"evalq_queue_gpu_free_{slugify(host, separator='_')}"


def slots_limit(host: str) -> str:
    """Global concurrency limit: how many queued commands run at once on one machine (`evalq queue slots`)."""
    return f"evalq:queue-slots:{host}"
