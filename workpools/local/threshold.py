"""A machine's default free-memory threshold (`evalq queue gpu-free-threshold 0.8`, task-spooler's
`--set_gpu_free_perc 80`): a GPU counts as free while at least this fraction of its memory is
unused. A Prefect Variable per host; a job without `--gpu-free-threshold` of its own reads it
each time it looks for GPUs, so a change applies to jobs already queued.
"""

from __future__ import annotations

from workpools.local.naming import gpu_free_variable

DEFAULT_THRESHOLD = 0.9
"""task-spooler's default (90 % of the memory free)."""


async def read_threshold(client, host: str) -> float:
    """The host's threshold, `DEFAULT_THRESHOLD` until one is set."""
    variable = await client.read_variable_by_name(gpu_free_variable(host))
    value = variable.value if variable is not None else None
    return float(value) if isinstance(value, (int, float)) and 0 <= value <= 1 else DEFAULT_THRESHOLD


async def set_threshold(client, host: str, value: float) -> float:
    """Set the host's threshold; what it reads afterwards."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    name = gpu_free_variable(host)
    try:
        await client.create_variable(VariableCreate(name=name, value=value, tags=["evalq"]))
    except ObjectAlreadyExists:
        await client.update_variable(VariableUpdate(name=name, value=value))
    return await read_threshold(client, host)
