"""`sim`: the built-in evaluator. It plays the policy protocol of docs/architecture.md.

client `reset` -> server `ready`; `step` -> `action` (repeated); `close`.
Options: `load_seconds` (simulated loading in `prepare`), `steps`, `step_seconds`
(simulated physics per step), `connect_timeout`, `step_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets

from flows.evaluators.base import EvaluationError, Metrics, ServerUnavailable
from generate.models import Job, Server


class SimEvaluator:
    replayable = True
    """`run` may be called again after a server failure, without a new `prepare`."""

    def __init__(
        self,
        load_seconds: float = 1.0,
        steps: int = 10,
        step_seconds: float = 0.1,
        connect_timeout: float = 10.0,
        step_timeout: float = 30.0,
    ):
        self.load_seconds = float(load_seconds)
        self.steps = int(steps)
        self.step_seconds = float(step_seconds)
        self.connect_timeout = float(connect_timeout)
        self.step_timeout = float(step_timeout)
        self.instance: Any = None

    async def prepare(self, job: Job) -> None:
        """Read the instance file (a broken one is not retryable) and 'load' the simulator."""
        path = job.payload.instance_path
        try:
            with open(path, encoding="utf-8") as handle:
                self.instance = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            raise EvaluationError(f"instance file {path}: {exc}") from None
        await asyncio.sleep(self.load_seconds)

    async def run(self, job: Job, server: Server) -> Metrics:
        started = time.time()
        try:
            connection = await asyncio.wait_for(
                websockets.connect(server.url, open_timeout=self.connect_timeout), self.connect_timeout
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise ServerUnavailable(server, f"cannot connect: {exc or type(exc).__name__}") from None
        try:
            reward = await self._play(connection, job, server)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise ServerUnavailable(server, f"connection lost: {exc or type(exc).__name__}") from None
        finally:
            await connection.close()
        return {
            "success": reward > 0,
            "reward": round(reward, 4),
            "steps": self.steps,
            "started_at": started,
            "finished_at": time.time(),
        }

    async def _play(self, connection, job: Job, server: Server) -> float:
        await self._exchange(connection, {"type": "reset", "episode": job.id}, expect="ready", server=server)
        reward = 0.0
        for step in range(self.steps):
            await asyncio.sleep(self.step_seconds)
            answer = await self._exchange(
                connection, {"type": "step", "obs": {"t": step}}, expect="action", server=server
            )
            action = answer.get("action")
            reward += float(action) if isinstance(action, (int, float)) else 0.0
        await connection.send(json.dumps({"type": "close"}))
        return reward

    async def _exchange(self, connection, message: dict, expect: str, server: Server) -> dict:
        await connection.send(json.dumps(message))
        raw = await asyncio.wait_for(connection.recv(), self.step_timeout)
        try:
            answer = json.loads(raw)
        except json.JSONDecodeError:
            raise ServerUnavailable(server, f"answered {raw[:80]!r}, not JSON") from None
        if answer.get("type") != expect:
            raise ServerUnavailable(server, f"answered {answer.get('type')!r} to {message['type']!r}")
        return answer
