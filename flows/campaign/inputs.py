"""Loading a campaign's jobs.json and resources.json, with one-line errors."""

from __future__ import annotations

from pathlib import Path

from generate.errors import InputError
from generate.jsonio import read_model
from generate.models import Job, JobList, Resources


def load_campaign_inputs(jobs_file: Path | str, resources_file: Path | str) -> tuple[list[Job], Resources]:
    """Both files validated, and every pool a job names present in the resources."""
    jobs = read_model(jobs_file, JobList)
    resources = read_model(resources_file, Resources)
    for pool in resources.pools:
        if not resources.servers(pool):
            raise InputError(resources_file, f"pool {pool!r} has no servers")
    seen: set[str] = set()
    for index, job in enumerate(jobs):
        if job.id in seen:
            raise InputError(jobs_file, f"[{index}] duplicate job id {job.id!r}")
        seen.add(job.id)
        for pool in job.resource_types:
            if pool not in resources.root:
                raise InputError(jobs_file, f"[{index}] job {job.id!r} names pool {pool!r}, which {resources_file} lacks")
    return jobs, resources
