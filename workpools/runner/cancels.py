"""The runner's cancel watcher, which outlives API outages.

Prefect's `FlowRunCancellingObserver` follows `Cancelling` events over the events websocket
and, while the stream is down, polls the runs in flight every `polling_interval`. During an
API outage its polls fail at once (its client never connected, so Prefect's client does not
retry a refused connection); after three in a row Prefect ends the polling for good, prints
tracebacks to stdout and logs "Cancellation polling task failed": a cancel issued after the
outage is never seen. Here a poll waits the outage out instead (`retrying` without a deadline:
the watcher holds nothing), so the watcher never gives up, and a cancel is found within a
poll interval of the API's return while the stream reconnects (with Prefect's back-off, up
to a minute after a long outage). The stream's comings and goings are logged at debug level:
the outage itself is said once, by `flows/runtime/api_health.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect._internal.observers import FlowRunCancellingObserver

from flows.runtime.api_retry import retrying

STREAM_WORDS = ("websocket", "events stream")
"""What Prefect's messages about the events stream (lost, polling instead, reconnected) say."""


class StreamNewsAtDebug(logging.LoggerAdapter):
    """A logger that logs the events stream's comings and goings at debug level."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and any(word in msg for word in STREAM_WORDS):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


class PatientCancellingObserver(FlowRunCancellingObserver):
    """Prefect's cancel watcher whose polls wait for the API instead of failing."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.logger = StreamNewsAtDebug(self.logger)

    async def _check_for_cancelled_flow_runs(self) -> None:
        await retrying(super()._check_for_cancelled_flow_runs, forever=True)
