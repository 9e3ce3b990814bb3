"""`RunLoop`: a thread with its own event loop, where a runner's flow runs execute side by side.

Flow runs do not share the worker's loop or the main thread: Prefect's engine installs a
SIGTERM handler when it runs in the main thread (one process-wide handler for all runs),
and a blocking evaluator must not stall the worker's pick-up. Runs share one Prefect client
(one connection pool) and the settings the runner gives them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from typing import Any, Awaitable, Callable

from prefect.context import AsyncClientContext
from prefect.settings import temporary_settings


class RunCancelled(Exception):
    """The run's task was cancelled (by the runner's `cancel`, or because the loop stopped)."""


class RunLoop:
    def __init__(self, settings: dict[Any, Any] | None = None, name: str = "evalq-runs",
                 on_client: Callable[[Any], None] | None = None):
        self._settings = settings or {}
        self._on_client = on_client
        """Called with the shared Prefect client once it exists."""
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._context: contextvars.Context | None = None
        self._tasks: dict[Any, asyncio.Task] = {}

    def start(self) -> "RunLoop":
        self._thread.start()
        self._ready.wait()
        return self

    def _main(self) -> None:
        asyncio.run(self._host())

    async def _host(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        with temporary_settings(updates=self._settings):
            async with AsyncClientContext() as shared:
                if self._on_client is not None:
                    self._on_client(shared.client)
                self._context = contextvars.copy_context()  # runs inherit the settings and client
                self._ready.set()
                await self._stop.wait()
                for task in list(self._tasks.values()):
                    task.cancel()
                if self._tasks:
                    await asyncio.wait(list(self._tasks.values()))

    def submit(self, key: Any, run: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future:
        """Start `run()` as a task of this loop; its outcome (or cancellation) arrives in the future."""
        outcome: concurrent.futures.Future = concurrent.futures.Future()

        def report(task: asyncio.Task) -> None:
            self._tasks.pop(key, None)
            if task.cancelled():
                outcome.set_exception(RunCancelled())
            elif task.exception() is not None:
                outcome.set_exception(task.exception())
            else:
                outcome.set_result(task.result())

        outcome.set_running_or_notify_cancel()  # only the task's own outcome settles it

        def create() -> None:
            task = self._loop.create_task(run(), context=self._context.copy())
            self._tasks[key] = task
            task.add_done_callback(report)

        self._loop.call_soon_threadsafe(create)
        return outcome

    def cancel(self, key: Any) -> bool:
        """Cancel the run started under `key` (thread-safe); False if there is none."""
        task = self._tasks.get(key)
        if task is None:
            return False
        self._loop.call_soon_threadsafe(task.cancel)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every run still going and wait for the loop to finish."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
