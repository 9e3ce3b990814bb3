"""Demo policy servers: the protocol of docs/architecture.md, with a conscience.

Each server counts the episodes it serves at once and records a *violation* when that
count exceeds its capacity, so tests and benchmarks can prove that evalq never
overloads a team's server. Busy intervals (by the server's own clock) go to a JSON-lines
log for utilization measurements. `{"type": "stats"}` returns the counters.

Run many at once: `python -m flows.demo.policy_server resources.json [--log busy.jsonl]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import websockets
from websockets.asyncio.server import ServerConnection, serve

from generate.errors import InputError
from generate.jsonio import read_model
from generate.models import Resources


@dataclass
class ServerStats:
    address: str
    capacity: int
    active: int = 0
    max_active: int = 0
    violations: int = 0
    episodes: int = 0
    busy_seconds: float = 0.0


@dataclass
class PolicyServer:
    """One policy server on `host:port` serving `capacity` episodes at once."""

    host: str
    port: int
    capacity: int = 1
    log_path: Path | None = None
    stats: ServerStats = field(init=False)

    def __post_init__(self):
        self.stats = ServerStats(address=f"{self.host}:{self.port}", capacity=self.capacity)

    async def handle(self, connection: ServerConnection) -> None:
        episode_start: float | None = None
        episode = None
        try:
            async for raw in connection:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "stats":
                    await connection.send(json.dumps({"type": "stats", **asdict(self.stats)}))
                elif kind == "reset":
                    if episode_start is not None:
                        self._end(episode, episode_start)
                    episode, episode_start = message.get("episode"), self._begin()
                    await connection.send(json.dumps({"type": "ready"}))
                elif kind == "step":
                    await connection.send(json.dumps({"type": "action", "action": random.random()}))
                elif kind == "close":
                    break
        except (websockets.exceptions.ConnectionClosed, json.JSONDecodeError):
            pass
        finally:
            if episode_start is not None:
                self._end(episode, episode_start)

    def _begin(self) -> float:
        self.stats.active += 1
        self.stats.max_active = max(self.stats.max_active, self.stats.active)
        if self.stats.active > self.capacity:
            self.stats.violations += 1
        return time.time()

    def _end(self, episode: str | None, start: float) -> None:
        end = time.time()
        self.stats.active -= 1
        self.stats.episodes += 1
        self.stats.busy_seconds += end - start
        if self.log_path is not None:
            record = {"server": self.stats.address, "episode": episode, "start": start, "end": end}
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")


class PolicyServerFleet:
    """Many demo policy servers in one background thread with its own event loop."""

    def __init__(self, servers: list[PolicyServer]):
        self.servers = {server.stats.address: server for server in servers}
        self._loop = asyncio.new_event_loop()
        self._listeners: dict[str, object] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="policy-servers", daemon=True)

    def start(self) -> "PolicyServerFleet":
        """Listen on every server's port; a port that cannot be bound stops them all with `InputError`."""
        self._thread.start()
        for address, server in self.servers.items():
            try:
                self.start_server(address)
            except OSError as exc:
                self.stop()
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise InputError(None, f"policy server {address}: cannot listen on port {server.port}: {reason}") from None
        return self

    def _call(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start_server(self, address: str) -> None:
        """(Re)start listening for `address`; raises OSError if the port is taken."""
        server = self.servers[address]

        async def listen():
            return await serve(server.handle, server.host, server.port, ping_interval=None)

        self._listeners[address] = self._call(listen())

    def kill_server(self, address: str) -> None:
        """Stop listening and drop every open connection at once: a dead policy server."""
        listener = self._listeners.pop(address, None)
        if listener is None:
            return

        async def close():
            listener.close(close_connections=True)
            await listener.wait_closed()

        self._call(close())

    def stats(self) -> dict[str, ServerStats]:
        return {address: server.stats for address, server in self.servers.items()}

    def stop(self) -> None:
        for address in list(self._listeners):
            self.kill_server(address)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> "PolicyServerFleet":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def move_ports(servers_by_pool: dict[str, list[dict]], port_base: int) -> dict[str, list[dict]]:
    """A copy of a resources mapping (raw or generated) whose i-th distinct server, in file
    order, listens on `port_base + i`; everything else is kept."""
    import copy

    moved = copy.deepcopy(servers_by_pool)
    ports: dict[tuple[str, int], int] = {}
    for server in (server for servers in moved.values() for server in servers):
        server["port"] = ports.setdefault((server["host"], server["port"]), port_base + len(ports))
    if port_base + len(ports) - 1 > 65535:
        raise InputError(None, f"--port-base {port_base}: {len(ports)} servers need ports up to {port_base + len(ports) - 1}")
    return moved


def fleet_from_resources(resources: dict[str, list[dict]], log_path: Path | None = None) -> PolicyServerFleet:
    """One demo server per distinct `host:port` in a resources.json mapping."""
    servers: dict[str, PolicyServer] = {}
    for pool_servers in resources.values():
        for spec in pool_servers:
            address = f"{spec['host']}:{spec['port']}"
            servers.setdefault(
                address, PolicyServer(spec["host"], int(spec["port"]), int(spec.get("capacity", 1)), log_path)
            )
    return PolicyServerFleet(list(servers.values()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run demo policy servers for every server in resources.json.")
    parser.add_argument("resources", type=Path)
    parser.add_argument("--log", type=Path, default=None, help="append busy intervals (JSON lines) here")
    args = parser.parse_args(argv)
    fleet = fleet_from_resources(read_model(args.resources, Resources).model_dump(mode="json"), args.log).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"serving {len(fleet.servers)} policy servers", flush=True)
    stop.wait()
    fleet.stop()
    violations = sum(stats.violations for stats in fleet.stats().values())
    print(json.dumps({address: asdict(stats) for address, stats in fleet.stats().items()}), flush=True)
    raise SystemExit(1 if violations else 0)


if __name__ == "__main__":
    main()
