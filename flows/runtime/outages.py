"""Prefect's background services through an API outage: nothing lost, the outage said once.

Two services of Prefect's run in every process that runs flows, and neither is ours to call:
- The events worker keeps every event it could not send and resends them all, in order and
  with their times, once the API is back (`prefect/events/clients.py`, `_reconnect`), but on
  the way it logs a WARNING ("Unable to connect") and an ERROR ("Service 'EventsWorker'
  failed to process item") per event. `OutageNoise` drops that pair and reports the outage
  to `API_HEALTH`, which says it once. It also drops the websockets library's ERROR
  "keepalive ping failed" when the ping found its connection closed (a race of its keepalive
  task with the close, seen once a server had gone away): the connection's owner reconnects.
- The log worker gives a batch of run logs up after its client's retries (about a minute),
  drops it and writes "--- Error logging to API ---" to stderr. `PatientLogWorker` sends
  its batches with `retrying`, so they wait out an outage of up to the budget.

`handle_api_outages()` installs both, once per process: `evalq campaign run` (before the
campaign flow's first log lines), the campaign and episode flows and the warm runner call it.
"""

from __future__ import annotations

import logging
import threading
import time

from prefect.logging.handlers import APILogWorker, set_api_log_sink
from websockets.exceptions import ConnectionClosed

from flows.runtime.api_health import API_HEALTH, ApiHealth
from flows.runtime.api_retry import retrying


class OutageNoise(logging.Filter):
    """Drops the events client's "Unable to connect" WARNING (reporting the outage to
    `API_HEALTH` instead), the events worker's ERROR that follows it for the same event, and a
    websocket keepalive's ERROR about a connection already closed."""

    FOLLOWS_WITHIN_SECONDS = 5.0
    LOGGERS = ("prefect.events.clients", "prefect._internal.concurrency", "websockets.client")

    def __init__(self, health: ApiHealth = API_HEALTH):
        super().__init__()
        self.health = health
        self._last_refused = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        args = record.args if isinstance(record.args, tuple) else ()
        if record.name == "prefect.events.clients" and message.startswith("Unable to connect to"):
            self._last_refused = time.monotonic()
            self.health.away(f"events: {args[-1] if args else 'no connection'}", self._last_refused)
            return False
        if record.name == "prefect._internal.concurrency" and message.startswith("Service %r failed to process item"):
            return not (args[:1] == ("EventsWorker",) and time.monotonic() - self._last_refused <= self.FOLLOWS_WITHIN_SECONDS)
        if record.name == "websockets.client" and message == "keepalive ping failed":
            return not (record.exc_info and isinstance(record.exc_info[1], ConnectionClosed))
        return True


class PatientLogWorker(APILogWorker):
    """Prefect's log worker, whose batches wait out an API outage instead of being dropped.
    Past the budget a batch is dropped (`API_HEALTH` has said the calls give up)."""

    async def _handle_batch(self, items: list[bytes]) -> None:
        body = b"[" + b",".join(items) + b"]"
        try:
            await retrying(lambda: self._client.request("POST", "/logs/", content=body,
                                                        headers={"Content-Type": "application/json"}))
        except Exception as exc:  # noqa: BLE001 - a log batch never fails the process that logs
            logging.getLogger("evalq.api").debug("dropped %d log lines: %s", len(items), exc)


_NOISE = OutageNoise()
_installed = threading.Lock()


def handle_api_outages() -> None:
    """Install `OutageNoise` and `PatientLogWorker` in this process (once)."""
    with _installed:
        for name in OutageNoise.LOGGERS:
            target = logging.getLogger(name)
            if _NOISE not in target.filters:
                target.addFilter(_NOISE)
        set_api_log_sink(send_log)


def send_log(log: dict) -> None:
    """Where Prefect's log handler sends a run's log (`prefect.logging.handlers.emit_api_log`)."""
    PatientLogWorker.instance().send(log)
