"""The data that crosses a boundary: the submitted config, the flow's job, the HTTP answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Status = Literal["pending", "running", "completed", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("pending", "running", "completed", "failed", "cancelled")
SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Competition ids become an argv element and part of a file name: no leading dash, no slash."""


class GradingConfig(BaseModel):
    """The `config_file` YAML of a submission (unknown keys are ignored)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    competition_id: str = Field(pattern=SAFE_ID, description="Which competition's grader to run.")
    project_id: str = Field(min_length=1, max_length=200)
    user_id: str = Field(min_length=1, max_length=128, description="Owner of the job; TOKENS.yaml key.")
    expected_time: float = Field(gt=0, le=7 * 24 * 3600, description="Seconds the grading should take.")
    token: SecretStr = Field(description="The user's token; checked, never stored or logged.")


class GradingJob(BaseModel):
    """The one parameter of a `grade-solution` flow run (no token in it)."""

    user_id: str
    project_id: str
    competition_id: str = Field(pattern=SAFE_ID)
    expected_time: float = Field(gt=0)
    timeout_seconds: float | None = Field(None, gt=0, description="Kill the grading command after this long; None: never.")
    staged_solution: str = Field(description="Where the API put the uploaded file; the run moves it.")
    results_dir: str = Field(description="Holds work/<user>/<job id>/ and the results files.")
    grade_argv: list[str] = Field(min_length=1, description="Argv template (already split, never a shell).")
    grade_cwd: str | None = Field(None, description="Where the grading command runs (`--grade-cwd`); None: the job's work dir.")


class JobRecord(BaseModel):
    """What the flow writes to its work dir when the grading command ends (job.json)."""

    exit_code: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    results_file: str | None = Field(None, description="Name of the copy in the results dir.")


NodeId = int | None
"""A node's stable index (`flows/grader/nodes.py`), as the API's clients read it; None only for
a job whose node was deleted before it got one."""


class SubmitAccepted(BaseModel):
    """`POST /api/submit?wait=false`."""

    job_id: str
    node_id: NodeId
    node_name: str
    status: Status = "pending"
    message: str
    created_at: datetime | None


class JobResults(BaseModel):
    """`GET /api/results/{job_id}`; `stdout` holds the results.jsonl text."""

    job_id: str
    status: Status
    stdout: str
    stderr: str
    exit_code: int | None
    started_at: datetime | None
    completed_at: datetime | None
    overdue: bool = Field(False, description="It ran longer than its expected_time (flagged, never killed for it).")


class SubmitOutcome(JobResults):
    """`POST /api/submit?wait=true`; on a wait timeout `status` is not final and `message` says so."""

    node_id: NodeId
    node_name: str
    message: str | None = None


class JobStatus(BaseModel):
    """`GET /api/status/{job_id}`."""

    job_id: str
    status: Status
    node_id: NodeId
    node_name: str
    queue_position: int | None = Field(description="1 = next to start on its node; null unless pending.")
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    exit_code: int | None
    expected_time: float
    overdue: bool = Field(description="Running (or ran) longer than expected_time: flagged, not killed.")


class CancelAnswer(BaseModel):
    message: str
    status: Status = "cancelled"


NodeState = Literal["online", "offline", "paused"]


class NodeInfo(BaseModel):
    node_id: int = Field(description="The node's stable index (0, 1, ...), as clients of the API know it.")
    node_name: str = Field(description="Its work queue in the evalq-grader pool.")
    ip: str | None
    queue_length: int = Field(description="Queued and running jobs.")
    total_wait_time: float = Field(description="Sum of their expected_time, seconds.")
    status: Literal["active", "inactive"] = Field(description="active: it takes jobs (online and not paused).")
    state: NodeState = Field(description="online (a runner polls it), offline, or paused.")


class NodesAnswer(BaseModel):
    nodes: list[NodeInfo]


class JobSummary(BaseModel):
    job_id: str
    user_id: str
    status: Status
    node_id: NodeId
    node_name: str
    created_at: datetime | None
    completed_at: datetime | None


class JobsAnswer(BaseModel):
    jobs: list[JobSummary]
