"""The logging handler behind `attach_cloud_logging`: run records to Cloud Logging, labelled.

One handler serves every flow run of the process and picks each record's labels by the
record's flow run id (Prefect's run loggers put it on every record), so runs sharing a process
keep their own labels and records of runs nobody registered are not sent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from google.cloud.logging.handlers import CloudLoggingHandler

from flows.cloudlogging.client import global_resource

MAX_RUNS = 10_000
"""Runs remembered at once: a long-lived process forgets the oldest (they have long finished)."""


class RunLabelsHandler(CloudLoggingHandler):
    """Sends the records of registered flow runs only, each with its run's labels."""

    def __init__(self, client, name: str):
        super().__init__(client, name=name, resource=global_resource(client.project))
        self.runs: OrderedDict[str, dict[str, str]] = OrderedDict()

    def register(self, flow_run_id: str, labels: dict[str, str]) -> None:
        self.runs[flow_run_id] = labels
        self.runs.move_to_end(flow_run_id)
        while len(self.runs) > MAX_RUNS:
            self.runs.popitem(last=False)

    def filter(self, record: logging.LogRecord) -> bool:
        labels = self.runs.get(str(getattr(record, "flow_run_id", "")))
        if labels is None:
            return False
        record.labels = {**getattr(record, "labels", {}), **labels}
        return super().filter(record)

