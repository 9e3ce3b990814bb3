"""Retry requests: how evaltui (or anyone) asks a campaign for a new attempt of a settled job.

A new attempt (a new run, with a fresh budget of `--max-attempts`) is the campaign's to make:
it numbers attempts and creates runs under idempotency keys. So a retry is a request the
campaign reads each tick, as it reads its pause switch: one Prefect Variable per request
(created atomically, deleted by the campaign once applied), tagged with the campaign so it
is found without name parsing. A request for a job still in flight waits until the job
settles; one for a job that completed, or that the campaign does not know, is dropped. (The
Prefect UI's Retry reruns the same run instead; the campaign follows that too: `settled.py`.)
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID, uuid4

from pydantic import BaseModel, Field

from flows.naming import RETRY_REQUEST_TAG, campaign_tag, retry_request_variable

READ_LIMIT = 200


class RetryRequest(BaseModel):
    """One request to run a job of a campaign again, with a fresh attempt budget."""

    campaign: str
    job_id: str
    flow_run_id: UUID | None = None
    """The run the request was made from (its latest failed or cancelled attempt)."""
    requested_by: str = "evaltui"
    requested_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


def request_tags(campaign: str) -> list[str]:
    return [RETRY_REQUEST_TAG, campaign_tag(campaign)]


async def request_retry(client, request: RetryRequest) -> str:
    """Store the request for the campaign to read; the variable's name."""
    from prefect.client.schemas.actions import VariableCreate

    name = retry_request_variable(uuid4().hex)
    await client.create_variable(VariableCreate(name=name, value=request.model_dump(mode="json"), tags=request_tags(request.campaign)))
    return name


async def pending_requests(client, campaign: str) -> list[tuple[str, RetryRequest]]:
    """The campaign's stored requests, oldest first, as (variable name, request)."""
    body = {"variables": {"tags": {"all_": request_tags(campaign)}}, "sort": "CREATED_DESC", "limit": READ_LIMIT}
    response = await client.request("POST", "/variables/filter", json=body)
    found = []
    for variable in reversed(response.json()):
        try:
            request = RetryRequest.model_validate(variable["value"])
        except (ValueError, TypeError):
            continue  # not ours to judge; the campaign leaves it
        if request.campaign == campaign:
            found.append((variable["name"], request))
    return found


async def drop_request(client, name: str) -> None:
    from prefect.exceptions import ObjectNotFound

    try:
        await client.delete_variable_by_name(name)
    except ObjectNotFound:
        pass
