"""Short, stable queue ids (1, 2, 3, ...) for humans, handed out without a lock.

A candidate id is one past the highest handed out (a Prefect Variable, or the runs' tags if
the Variable is gone). The flow run is created with the idempotency key of that id: the
server returns the existing run if another submit took the id first (told apart by a nonce
label), and the submit tries the next one. So two submitters never share an id.
"""

from __future__ import annotations

from uuid import uuid4

from workpools.local.job import (
    LAST_ID_VARIABLE,
    NONCE_LABEL,
    CommandJob,
    queue_idempotency_key,
)

MAX_TRIES = 1000


async def last_queue_id(client) -> int:
    """The highest id handed out so far (0 for an empty queue)."""
    from workpools.local.entries import read_entries

    variable = await client.read_variable_by_name(LAST_ID_VARIABLE)
    if variable is not None and isinstance(variable.value, int):
        return variable.value
    return max((entry.queue_id or 0 for entry in await read_entries(client)), default=0)


async def record_queue_id(client, queue_id: int) -> None:
    """Raise the Variable to `queue_id` (never lower it)."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    variable = await client.read_variable_by_name(LAST_ID_VARIABLE)
    if variable is None:
        try:
            await client.create_variable(VariableCreate(name=LAST_ID_VARIABLE, value=queue_id, tags=["evalq"]))
            return
        except ObjectAlreadyExists:
            variable = await client.read_variable_by_name(LAST_ID_VARIABLE)
    if not isinstance(variable.value, int) or variable.value < queue_id:
        await client.update_variable(VariableUpdate(name=LAST_ID_VARIABLE, value=queue_id))


async def create_numbered_run(client, deployment_id, job: CommandJob, paths) -> tuple[object, CommandJob]:
    """Create the job's flow run under the next free queue id; the run and the job as queued.

    `paths(queue_id)` gives the job fields that depend on the id (its output files).
    """
    nonce = uuid4().hex
    candidate = await last_queue_id(client) + 1
    for _ in range(MAX_TRIES):
        numbered = job.model_copy(update={"queue_id": candidate, **paths(candidate)})
        run = await client.create_flow_run_from_deployment(
            deployment_id,
            parameters={"job": numbered.model_dump(mode="json")},
            name=numbered.run_name(),
            tags=numbered.tags(),
            idempotency_key=queue_idempotency_key(candidate),
            labels={NONCE_LABEL: nonce},
        )
        if (run.labels or {}).get(NONCE_LABEL) == nonce:
            await record_queue_id(client, candidate)
            return run, numbered
        candidate += 1
    raise RuntimeError(f"no free queue id after {MAX_TRIES} tries")
