"""What an evaluator is, and the two kinds of failure the campaign tells apart.

An episode calls `prepare(job)` once (load the simulator: may take minutes, holds
no policy-server slot), then `run(job, server)` while it holds a slot on `server`.
`run` returns the metrics as a JSON-able dict. Either method may be sync or async.
An evaluator that records videos declares an attribute `video_path`: the episode sets it
before `prepare` to the (temporary) file to write the MP4 to (`flows/results/videos.py`).
An evaluator whose `run` can be called again after a `ServerUnavailable` (on another server)
declares `replayable = True`; otherwise the episode calls `prepare` again first.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from generate.models import Job, Server

Metrics = dict[str, Any]


class ServerUnavailable(Exception):
    """The policy server refused, timed out or dropped the connection: retry later or elsewhere."""

    def __init__(self, server: Server, reason: str):
        self.server = server
        self.reason = reason
        super().__init__(f"policy server {server.address} unavailable: {reason}")


class EvaluationError(Exception):
    """The evaluator or the instance is broken: running it again would fail again."""


@runtime_checkable
class Evaluator(Protocol):
    def prepare(self, job: Job) -> Any: ...

    def run(self, job: Job, server: Server) -> Any: ...
