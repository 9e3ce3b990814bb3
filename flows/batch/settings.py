"""The `batch` flow's parameters as one model: the contract between `evalq batch run`, the flow
(`flow.py`), the kind of its jobs (`kind.py`) and the campaign's loop, which reads the general
part (`flows.campaign.settings.DispatchSettings`)."""

from __future__ import annotations

from pydantic import model_validator

from flows.campaign.settings import DispatchSettings
from flows.naming import LOCAL_WORK_POOL, item_deployment

DEFAULT_WINDOW = 100
"""Items in flight at most without `--max-in-flight`: just in time, never every run up front."""


class BatchSettings(DispatchSettings):
    """A batch of pipelines: one flow run per item, from our `batch-item` flow running `command`
    or from a deployment of the user's given `parameters`."""

    items_file: str
    pool: str | None = None
    """The work pool of the items' runs: with a command, `evalq-local` (the warm runner) by
    default; with a deployment, its own pool (read when the batch starts)."""
    command: list[str] | None = None
    """The argv template (`flows/batch/templates.py`); None with a deployment of the user's."""
    parameters: dict = {}
    """The user's deployment's parameters, templated per item."""
    job_variables: dict = {}
    """Job variables of every item's run on its work pool (memory, GPUs, a SLURM partition)."""
    keep_for_seconds: float | None = None
    """Finished runs are deleted this long after they ended (`flows/batch/keep.py`); None: kept."""
    cwd: str | None = None
    """Where the command runs (where `evalq batch run` ran), if that folder exists where it runs."""
    deployment: str = ""
    prefetch: int = 0
    max_prefetch: int = 0
    timeout_seconds: float | None = None
    """An item's command is killed after this long, and its attempt fails; None: no limit."""
    tick_seconds: float = 1.0

    @model_validator(mode="after")
    def _one_pipeline(self) -> "BatchSettings":
        if self.command is None and not self.deployment:
            raise ValueError("give a command or a deployment")
        if self.command is not None and self.deployment and self.deployment != item_deployment(self.pool or LOCAL_WORK_POOL):
            raise ValueError("give a command or a deployment, not both")
        if self.command is not None:
            self.pool = self.pool or LOCAL_WORK_POOL
            self.deployment = item_deployment(self.pool)
        return self

    @property
    def window(self) -> int:
        """The items in flight at most (the dispatcher's window on the pool)."""
        return self.max_in_flight or DEFAULT_WINDOW
