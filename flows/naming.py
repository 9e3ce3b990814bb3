"""Names shared by everything that reads or writes Prefect objects for evalq, and their parsers.

The episode and campaign flows write them; `evaltui`, `evalq pools status` and the work pools
read them; the grading service has a section of its own (the local GPU queue's names live
in `workpools/local/naming.py`). Every name is
built here and parsed back here (as rq's `keys.py` does), so no other module splits strings.
"""

from __future__ import annotations

from functools import partial

from generate.models import Job, Server

EPISODE_FLOW = "evaluate-episode"
CAMPAIGN_FLOW = "campaign"
BATCH_FLOW = "batch"
"""The dispatcher of a batch of pipelines (`flows/batch/flow.py`): a campaign whose jobs are items."""
BATCH_ITEM_FLOW = "batch-item"
"""One item's pipeline: a command run for it (`flows/batch/pipeline.py`)."""
BATCH_PURGE_FLOW = "batch-purge"
"""Deletes a batch's finished runs once `--keep-for` has passed (`flows/batch/keep.py`)."""
DISPATCH_FLOWS = (CAMPAIGN_FLOW, BATCH_FLOW)
"""Flows whose runs dispatch a campaign's jobs, each with a `name` parameter (the campaign's)."""
LOCAL_WORK_POOL = "evalq-local"
EPISODE_DEPLOYMENT = f"{EPISODE_FLOW}/local"
"""Default `flow/deployment` name the campaign dispatches episodes to."""

# Work-pool (worker) types, as `prefect worker start --type` knows them: the worker classes in
# workpools/ declare them and register with Prefect (pyproject's `prefect.collections` entry
# points, named after the type); flows find them through Prefect's registry (flows/runtime/work_pools.py).
RUNNER_POOL_TYPE = "evalq-runner"
"""Warm runners: flow runs in one long-lived process (`workpools/runner/`)."""
PREFORK_POOL_TYPE = "evalq-prefork"
"""A process forked per flow run from a preloaded one (`workpools/prefork/`)."""
SLURM_POOL_TYPE = "evalq-slurm"
KUBERNETES_POOL_TYPE = "evalq-kubernetes"
PREFORK_LEAVE_RUNS = "EVALQ_PREFORK_LEAVE_RUNS"
"""Set to `1` in a prefork worker's environment: its runs finish in their own processes when it stops."""

TAG = "evalq"
EPISODE_TAG = "evalq-episode"
"""Every job run of a campaign: an episode, or an item of a batch (a batch is a campaign whose jobs
need no policy-server slot; its runs also carry `BATCH_TAG`). The value predates batches."""
BATCH_TAG = "evalq-batch"
BATCH_PURGE_TAG = "evalq-batch-purge"
RERUN_TAG = "evalq-rerun"
"""Added by an episode run that starts again after it had ended (the Prefect UI's Retry,
`prefect flow-run retry`): its state history holds more than one attempt."""

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


def running_message(address: str, pool: str) -> str:
    """The Running state's message: which server the episode plays on."""
    return f"on {address} ({pool})"


def slot_of_running_message(message: str | None) -> tuple[str, str] | None:
    """(server address, pool) of a `running_message`; None for any other message."""
    if not message or not message.startswith("on ") or not message.endswith(")") or " (" not in message:
        return None
    address, pool = message[3:-1].split(" (", 1)
    return address, pool

CLAIM_PREFIX = "claimed by runner "


def claim_message(runner: str, token: str) -> str:
    """The Pending message of a runner's claim: who holds the run, and which claim it is (the
    token tells a claim that landed from one another runner made, when the answer was lost)."""
    return f"{CLAIM_PREFIX}{runner} [{token}]"


def claim_of_message(message: str | None) -> tuple[str, str | None] | None:
    """(runner, token) of a `claim_message` (token None from runners older than tokens); None for
    any other message, such as a Prefect worker's claim, which names nobody."""
    if not message or not message.startswith(CLAIM_PREFIX):
        return None
    rest = message[len(CLAIM_PREFIX):]
    runner, sep, token = rest.rpartition(" [")
    if sep and token.endswith("]"):
        return runner, token[:-1]
    return rest, None


def handed_back_message(runner: str, why: str) -> str:
    """The Scheduled message of a run given back unstarted, so another runner takes it."""
    return f"handed back by runner {runner}: {why}"


# Custom state names an episode may end in
SKIPPED_STATE = "Skipped"
"""Completed: the metrics file already existed, nothing ran."""
NOT_RETRYABLE_STATE = "NotRetryable"
"""Failed: the evaluator or the instance is broken; requeueing cannot help."""
MISCONFIGURED_STATE = "Misconfigured"
"""Failed: the pools on the Prefect server do not fit the job (`evalq pools apply`, resources.json):
every episode would fail alike, so the campaign stops."""


POOL_LIMIT_PREFIX = "evalq:pool:"
SERVER_LIMIT_PREFIX = "evalq:server:"


def pool_limit(pool: str) -> str:
    """Global concurrency limit counting all busy slots of a pool."""
    return f"{POOL_LIMIT_PREFIX}{pool}"


def pool_of_limit(name: str) -> str | None:
    """`pool_limit` in reverse: the pool, None for another limit."""
    return name.removeprefix(POOL_LIMIT_PREFIX) if name.startswith(POOL_LIMIT_PREFIX) else None


def server_limit(server: Server) -> str:
    """Global concurrency limit of one policy server (limit = its capacity)."""
    return server_limit_of_address(server.address)


def server_limit_of_address(address: str) -> str:
    """`server_limit` of the server at `host:port`."""
    return f"{SERVER_LIMIT_PREFIX}{address}"


def address_of_limit(name: str) -> str | None:
    """`server_limit` in reverse: the server's `host:port`, None for another limit."""
    return name.removeprefix(SERVER_LIMIT_PREFIX) if name.startswith(SERVER_LIMIT_PREFIX) else None


def is_evalq_limit(name: str) -> bool:
    return name.startswith((POOL_LIMIT_PREFIX, SERVER_LIMIT_PREFIX))


SERVER_RESOURCE_PREFIX = "evalq.server."
FLOW_RUN_RESOURCE_PREFIX = "prefect.flow-run."


QUARANTINE_VARIABLE_PREFIX = "evalq_quarantine_"


def quarantine_variable(address: str) -> str:
    """Prefect Variable holding a policy server's quarantine record (`flows/slots/quarantine.py`)."""
    from slugify import slugify

    return f"{QUARANTINE_VARIABLE_PREFIX}{slugify(address, separator='_')}"


def server_resource_id(address: str) -> str:
    """Prefect event resource id of a policy server `host:port`."""
    return f"{SERVER_RESOURCE_PREFIX}{address}"


def address_of_resource_id(resource_id: str) -> str | None:
    """`server_resource_id` in reverse: the `host:port`, None for another resource."""
    return resource_id.removeprefix(SERVER_RESOURCE_PREFIX) if resource_id.startswith(SERVER_RESOURCE_PREFIX) else None


def flow_run_resource_id(flow_run_id: object) -> str:
    """Prefect's event resource id of a flow run."""
    return f"{FLOW_RUN_RESOURCE_PREFIX}{flow_run_id}"


def flow_run_id_of_resource_id(resource_id: str) -> str | None:
    """`flow_run_resource_id` in reverse: the flow-run id, None for another resource."""
    return resource_id.removeprefix(FLOW_RUN_RESOURCE_PREFIX) if resource_id.startswith(FLOW_RUN_RESOURCE_PREFIX) else None


def campaign_resource_id(campaign: str) -> str:
    """Event resource id of a campaign (slot events name it as related)."""
    return f"evalq.campaign.{campaign}"


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


def item_deployment(pool: str) -> str:
    """`flow/deployment` of the `batch-item` flow on work pool `pool` (a batch applies it)."""
    return f"{BATCH_ITEM_FLOW}/{pool}"


def item_tags(batch: str, item: str, pool: str, attempt: int, pipeline: str) -> list[str]:
    """Tags of a batch item's flow run: a job run of the campaign `batch` (evaltui shows the batch
    as its team and the pipeline's flow as its task)."""
    return [TAG, EPISODE_TAG, BATCH_TAG, campaign_tag(batch), f"team:{batch}", f"task:{pipeline}", f"pool:{pool}",
            f"attempt:{attempt}"]


RUN_NAME_CAMPAIGN_CHARS = 40
"""How much of the campaign's name an episode run's name carries (its tag keeps the whole name)."""
ATTEMPT_SUFFIX = " (attempt "


def episode_run_name(campaign: str, job_id: str, attempt: int = 1) -> str:
    """`<campaign>:<job id>` (an episode's `<team>/<task>/<instance>`, a batch's item id), then
    ` (attempt N)` after the first attempt: the
    runs of two campaigns tell themselves apart in `prefect flow-run ls` and the UI. A campaign
    name longer than `RUN_NAME_CAMPAIGN_CHARS` is cut with `…` (Prefect sets no limit, but its
    lists show the start of a name); the `campaign:` tag keeps it whole."""
    label = campaign if len(campaign) <= RUN_NAME_CAMPAIGN_CHARS else campaign[:RUN_NAME_CAMPAIGN_CHARS - 1] + "…"
    name = f"{label}:{job_id}"
    return name if attempt == 1 else f"{name}{ATTEMPT_SUFFIX}{attempt})"


def job_id_of_run_name(run_name: str) -> str:
    """The job id back from a job run's name (`episode_run_name` in reverse): an episode's
    `<team>/<task>/<instance>` or a batch item's id (no `:` or `/` in it); also from the names of
    episode runs made before names carried the campaign (`<team>/<task>/<instance>`)."""
    base, sep, rest = run_name.rpartition(ATTEMPT_SUFFIX)
    if not (sep and rest.endswith(")") and rest[:-1].isdigit()):
        base = run_name
    _, colon, job_id = base.rpartition(":")
    return job_id if colon and job_id and job_id.count("/") in (0, 2) else base


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


RETRY_REQUEST_TAG = "evalq-retry-request"


def retry_request_variable(request_id: str) -> str:
    """Prefect Variable holding one retry request (`flows/campaign/rerun_requests.py`); found by its
    tags (`RETRY_REQUEST_TAG` and the campaign's tag), not by its name."""
    return f"evalq_retry_{request_id}"


def campaign_of_plan_variable(name: str) -> str | None:
    """`campaign_plan_variable` in reverse, as far as a slug goes (the plan's `name` is exact)."""
    return name.removeprefix(PLAN_VARIABLE_PREFIX) if name.startswith(PLAN_VARIABLE_PREFIX) else None


def artifact_key(campaign: str) -> str:
    """The campaign's table artifact (its result at a glance); Prefect artifact keys allow
    lowercase letters, digits and dashes only."""
    from slugify import slugify

    return slugify(f"evalq-{campaign}")


def plan_artifact_key(campaign: str) -> str:
    """The campaign's planned episodes per (team, task) (`flows/campaign/plan.py`)."""
    return f"{artifact_key(campaign)}-plan"


def leaderboard_artifact_key(campaign: str) -> str:
    """The campaign's leaderboard (markdown)."""
    return f"{artifact_key(campaign)}-leaderboard"


def key_tag(key: str, value: object) -> str:
    """A `key:value` tag; `tag_value` reads it back."""
    return f"{key}:{value}"


def tag_value(tags: list[str], key: str) -> str | None:
    """The value of a `key:value` tag, e.g. `tag_value(run.tags, "team")`."""
    prefix = f"{key}:"
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return None


# -- the grading service (flows/grader/) ----------------------------------
GRADE_FLOW = "grade-solution"
GRADER_POOL = "evalq-grader"
GRADER_DEPLOYMENT_NAME = "grader"
GRADER_DEPLOYMENT = f"{GRADE_FLOW}/{GRADER_DEPLOYMENT_NAME}"
GRADER_TAG = "evalq-grader"
NODE_PREFIX = "node-"
GRADER_ENTRYPOINT = "flows.grader.flow:grade_solution"
"""New grader deployments name the flow so; deployments made before still say
`flows.grading.grade_solution` (kept importable: `flows/grader/flow.py`)."""
EPISODE_ENTRYPOINT = "flows.episode:evaluate_episode"
"""The episode flow, as prefect.yaml's deployments name it (a warm runner preloads it)."""
"""A module path, so runners import the installed package."""


def node_name(index: int) -> str:
    """The work queue standing for local node `index`."""
    return f"{NODE_PREFIX}{index}"


def grader_worker_name(node: str, pid: int) -> str:
    """The Prefect worker name of the runner serving `node` (one per process)."""
    return f"{GRADER_POOL}-{node}-{pid}"


user_tag = partial(key_tag, "grader-user")
node_tag = partial(key_tag, "grader-node")
NODE_ID_TAG_KEY = "grader-node-id"
node_id_tag = partial(key_tag, NODE_ID_TAG_KEY)
"""A grading job's node id (the integer clients read), kept with the job should its node go."""
GRADER_NODE_ID_VARIABLE = "evalq_grader_highest_node_id"
"""Prefect Variable: the highest grading-node id ever handed out (a deleted node's id is not reused)."""
competition_tag = partial(key_tag, "competition")
