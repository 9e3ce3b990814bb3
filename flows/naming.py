"""Names shared by everything that reads or writes Prefect objects for evalq.

The episode and campaign flows write them; `evaltui`, `evalq pools status` and the
work pools read them. Keep every such string here.
"""

from __future__ import annotations

from generate.models import Job, Server

EPISODE_FLOW = "evaluate-episode"
CAMPAIGN_FLOW = "campaign"
LOCAL_WORK_POOL = "evalq-local"
EPISODE_DEPLOYMENT = f"{EPISODE_FLOW}/local"
"""Default `flow/deployment` name the campaign dispatches episodes to."""

TAG = "evalq"
EPISODE_TAG = "evalq-episode"

# Events (resource = the policy server, related = flow run, pool, campaign)
SLOT_ACQUIRED = "evalq.slot.acquired"
SLOT_RELEASED = "evalq.slot.released"
SERVER_UNREACHABLE = "evalq.server.unreachable"
SERVER_QUARANTINED = "evalq.server.quarantined"
SERVER_RECOVERED = "evalq.server.recovered"
CAMPAIGN_PAUSED = "evalq.campaign.paused"
CAMPAIGN_RESUMED = "evalq.campaign.resumed"

# Running-state names an episode passes through (countable with Prefect's count endpoints)
LOADING_STATE = "Loading"
"""Running: the evaluator is loading the simulator (`prepare`)."""
WAITING_STATE = "WaitingForServer"
"""Running: loaded, waiting for a slot on a compatible policy server."""
RUNNING_STATE = "Running"
"""Running: the episode is being played against a policy server."""

# Custom state names an episode may end in
SKIPPED_STATE = "Skipped"
"""Completed: the metrics file already existed, nothing ran."""
NOT_RETRYABLE_STATE = "NotRetryable"
"""Failed: the evaluator or the instance is broken; requeueing cannot help."""


def pool_limit(pool: str) -> str:
    """Global concurrency limit counting all busy slots of a pool."""
    return f"evalq:pool:{pool}"


def server_limit(server: Server) -> str:
    """Global concurrency limit of one policy server (limit = its capacity)."""
    return f"{SERVER_LIMIT_PREFIX}{server.host}:{server.port}"


SERVER_LIMIT_PREFIX = "evalq:server:"


def address_of_server_limit(name: str) -> str | None:
    """`host:port` back from a server limit's name (`server_limit` in reverse); None for others."""
    return name[len(SERVER_LIMIT_PREFIX):] if name.startswith(SERVER_LIMIT_PREFIX) else None


QUARANTINE_VARIABLE_PREFIX = "evalq_quarantine_"


def quarantine_variable(address: str) -> str:
    """Prefect Variable holding a policy server's quarantine record (`flows/quarantine.py`)."""
    from slugify import slugify

    return f"{QUARANTINE_VARIABLE_PREFIX}{slugify(address, separator='_')}"


def server_resource_id(address: str) -> str:
    """Prefect event resource id of a policy server `host:port`."""
    return f"evalq.server.{address}"


def campaign_tag(campaign: str) -> str:
    return f"campaign:{campaign}"


def episode_tags(job: Job, campaign: str, pool: str, attempt: int) -> list[str]:
    """Tags of an episode flow run: filterable in the Prefect UI and by `evaltui`."""
    payload = job.payload
    return [
        TAG,
        EPISODE_TAG,
        campaign_tag(campaign),
        f"team:{payload.team_slug}",
        f"task:{payload.task}",
        f"track:{payload.track}",
        f"pool:{pool}",
        f"attempt:{attempt}",
    ]


def episode_run_name(job: Job, attempt: int) -> str:
    """`team/task/instance`, with the attempt when it is not the first."""
    return job.id if attempt == 1 else f"{job.id} (attempt {attempt})"


def job_id_of_run_name(run_name: str) -> str:
    """The job id back from an episode run's name (`episode_run_name` in reverse)."""
    job_id, sep, rest = run_name.rpartition(" (attempt ")
    return job_id if sep and rest.endswith(")") and rest[:-1].isdigit() else run_name


def attempt_of(tags: list[str]) -> int:
    """The attempt number from an episode run's `attempt:N` tag (1 when absent)."""
    value = tag_value(tags, "attempt")
    return int(value) if value and value.isdigit() else 1


def idempotency_key(campaign: str, job: Job, attempt: int) -> str:
    """Same campaign, job and attempt -> the same flow run, however often dispatched."""
    return f"evalq:{campaign}:{job.id}:{attempt}"


def pause_variable(campaign: str) -> str:
    """Prefect Variable that pauses a campaign's dispatch while it is `true`."""
    from slugify import slugify

    return f"evalq_paused_{slugify(campaign, separator='_')}"


PLAN_VARIABLE_PREFIX = "evalq_plan_"


def campaign_plan_variable(campaign: str) -> str:
    """Prefect Variable the campaign flow sets when it starts, read by `evaltui`.

    Value: `{"total": <number of jobs>, "pools": {"<pool>": ["<host>:<port>", ...]}}`: the
    progress total (runs are created just in time, so counting them cannot give it) and
    which server belongs to which pool (server limits do not say). Keep it small: Prefect
    caps a variable's value at 5,000 characters.
    """
    from slugify import slugify

    return f"{PLAN_VARIABLE_PREFIX}{slugify(campaign, separator='_')}"


def tag_value(tags: list[str], key: str) -> str | None:
    """The value of a `key:value` tag, e.g. `tag_value(run.tags, "team")`."""
    prefix = f"{key}:"
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return None
