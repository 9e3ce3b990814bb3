"""Episode and campaign run logs to Cloud Logging, labelled so that a filter finds one episode.

Off unless `EVALQ_CLOUD_LOGGING=1` (a work pool's base job template or a `prefect.yaml`
deployment's `env` can carry it); `EVALQ_CLOUD_LOGGING_NAME` names the log (default `evalq`),
`EVALQ_CLOUD_LOGGING_PROJECT` or `GOOGLE_CLOUD_PROJECT` the project. A flow calls
`attach_cloud_logging(campaign=..., team=...)` once; from then on the records of its run on
Prefect's run loggers also go to Cloud Logging, labelled with those values, the flow run id and
the attempt. Prefect's own handlers (the UI's logs) are untouched. Light to import: the Cloud
Logging client loads only when the setting is on.
"""

from __future__ import annotations

import logging
import os
import threading

from generate.errors import InputError

ENABLE_ENV = "EVALQ_CLOUD_LOGGING"
LOG_NAME_ENV = "EVALQ_CLOUD_LOGGING_NAME"
PROJECT_ENV = "EVALQ_CLOUD_LOGGING_PROJECT"
DEFAULT_LOG_NAME = "evalq"
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
"""The loggers behind Prefect's `get_run_logger()` and `log_prints`."""

_handler = None
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def shared_handler():
    """The process's handler, created and attached to Prefect's run loggers on first use."""
    global _handler
    with _lock:
        if _handler is None:
            from flows.cloudlogging.client import make_client
            from flows.cloudlogging.handler import RunLabelsHandler

            client = make_client(os.environ.get(PROJECT_ENV))
            _handler = RunLabelsHandler(client, os.environ.get(LOG_NAME_ENV) or DEFAULT_LOG_NAME)
            for name in RUN_LOGGERS:
                logging.getLogger(name).addHandler(_handler)
        return _handler


def attach_cloud_logging(**labels: object) -> bool:
    """Send the current flow run's logs to Cloud Logging too, when `EVALQ_CLOUD_LOGGING` asks.

    `labels` (e.g. campaign, team, task, instance) label every entry, with `flow_run_id` and
    `attempt`. Returns whether the run's logs go to Cloud Logging; a missing project or
    credentials is a warning on the run's log, never a failed run.
    """
    from prefect.context import FlowRunContext
    from prefect.logging import get_run_logger

    context = FlowRunContext.get()
    if not enabled() or context is None or context.flow_run is None:
        return False
    run = context.flow_run
    try:
        handler = shared_handler()
    except InputError as exc:
        get_run_logger().warning("Cloud Logging is on (%s=1) but unavailable: %s", ENABLE_ENV, exc)
        return False
    values = {key: str(value) for key, value in labels.items()}
    handler.register(str(run.id), {**values, "flow_run_id": str(run.id), "attempt": str(run.run_count)})
    return True


def close_cloud_logging() -> None:
    """Send what the handler still holds and detach it (interpreter exit also sends it)."""
    global _handler
    with _lock:
        handler, _handler = _handler, None
    if handler is not None:
        for name in RUN_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.flush()
        handler.close()
