"""The `batch-item` flow: one item's pipeline, a command run for it on whatever work pool runs the flow.

1. skip if the item's result exists (a run rerun after its item was done)
2. run the argv the batch filled for this item (no shell), in its own process group, with the
   environment of whatever runs it plus `EVALQ_BATCH`, `EVALQ_ITEM`, `EVALQ_ITEM_DIR`,
   `EVALQ_ATTEMPT`; every line it prints on stdout or stderr goes to the run's log (secrets
   masked: `flows/evaluators/redact.py`), which `evalq batch report` reads back
3. exit 0: Completed (the batch writes the item's result); another exit code: Failed, with the
   code and the last stderr line (the batch retries it up to `--max-attempts`); past
   `timeout_seconds`: the whole process group killed (SIGTERM, SIGKILL 10 s later), Failed; a
   command that cannot start at all (no such program): Misconfigured, and the batch stops.
A cancel (the Prefect UI, evaltui) kills the process group before the run ends.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed

from flows.batch.items import item_dir, result_path
from flows.evaluators.lines import LINE_LIMIT, Lines
from flows.evaluators.redact import bounded, redact, secret_values
from flows.naming import BATCH_ITEM_FLOW, MISCONFIGURED_STATE, SKIPPED_STATE
from flows.runtime.outages import handle_api_outages
from flows.runtime.process_groups import terminate_async

KILL_GRACE_SECONDS = 10.0


@flow(name=BATCH_ITEM_FLOW, persist_result=False)
async def run_item(item: str, argv: list[str], batch: str, results_dir: str, attempt: int = 1,
                   timeout_seconds: float | None = None, cwd: str | None = None):
    """Run one item's command; Completed when it exits 0."""
    logger = get_run_logger()
    handle_api_outages()
    if result_path(results_dir, item).exists():
        logger.info("Item %s is done already (%s); nothing to do", item, result_path(results_dir, item))
        return Completed(name=SKIPPED_STATE, message=f"result exists: {result_path(results_dir, item)}")
    folder = item_dir(results_dir, item)
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EVALQ_BATCH": batch, "EVALQ_ITEM": item, "EVALQ_ITEM_DIR": str(folder), "EVALQ_ATTEMPT": str(attempt)}
    where = cwd if cwd and Path(cwd).is_dir() else None
    if cwd and where is None:
        logger.warning("Folder %s does not exist here; the command runs in %s", cwd, os.getcwd())
    try:
        command = Command(argv, env, where, logger)
        code = await command.run(timeout_seconds)
    except OSError as exc:
        message = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        logger.error("Misconfigured: %s", message)
        return Failed(name=MISCONFIGURED_STATE, message=message)
    if code is None:
        return Failed(message=f"timed out after {timeout_seconds:g} s; its process group was killed")
    if code != 0:
        return Failed(message=f"exited with code {code}" + (f": {command.last_stderr}" if command.last_stderr else ""))
    return Completed(message=f"exited with code 0 after {command.seconds:.1f} s")


class Command:
    """One run of the item's argv, its output forwarded line by line to the run's log."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None, logger):
        self.argv, self.env, self.cwd, self.logger = argv, env, cwd, logger
        self.secrets = secret_values(env)
        self.last_stderr = ""
        """The last non-blank stderr line, secrets masked, cut to 200 characters."""
        self.seconds = 0.0

    async def run(self, timeout: float | None) -> int | None:
        """The exit code, or None if it ran past `timeout` (then its group is gone)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, cwd=self.cwd, start_new_session=True, limit=LINE_LIMIT,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        pumps = asyncio.gather(self.forward(process.stdout, False), self.forward(process.stderr, True))
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout)
            code = process.returncode
        except asyncio.TimeoutError:
            code = None
        finally:
            # children it left behind must not outlive it; a cancel or a timeout ends the whole group
            await asyncio.shield(terminate_async(process.pid, KILL_GRACE_SECONDS))
            await asyncio.shield(process.wait())
            await asyncio.shield(pumps)
            self.seconds = loop.time() - started
        return code

    async def forward(self, stream: asyncio.StreamReader, is_stderr: bool) -> None:
        lines = Lines(stream)
        while (raw := await lines.next()) is not None:  # a line over LINE_LIMIT comes in pieces
            line = redact(raw.decode("utf-8", "replace").rstrip("\n"), self.secrets)
            self.logger.info("%s%s", "[stderr] " if is_stderr else "", line)
            if is_stderr and line.strip():
                self.last_stderr = bounded(line)
