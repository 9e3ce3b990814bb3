"""`evalq k8s logs JOB_NAME`: a Job's log entries read back from Cloud Logging (the old `get-job-logs`).

Two kinds of entries name a Job: GKE's own of its containers (labelled `k8s-pod/job-name`,
the label the Job controller gives its pods) and those the `kubernetes-job` flow wrote with
`EVALQ_CLOUD_LOGGING=1` (labelled `job_name`). Both are read, oldest first, as JSON records.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from generate.errors import InputError


def job_logs_filter(job_name: str, since: timedelta, now: datetime) -> str:
    start = (now - since).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f'(labels."k8s-pod/job-name"="{job_name}" OR labels.job_name="{job_name}") AND timestamp>="{start}"'


def read_job_logs(client, job_name: str, since: timedelta) -> list[dict]:
    """The entries of Job `job_name` newer than `since`, oldest first."""
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud.logging import ASCENDING

    from flows.cloudlogging.read import entry_record

    query = job_logs_filter(job_name, since, datetime.now(timezone.utc))
    try:
        return [entry_record(entry) for entry in client.list_entries(filter_=query, order_by=ASCENDING)]
    except GoogleAPICallError as exc:
        raise InputError(None, f"reading the logs of Job {job_name}: {exc.message or exc}") from None
