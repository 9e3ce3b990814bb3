"""The README's scaled setup on one host, for the tests and the benchmarks: PostgreSQL, Redis,
`evalq server migrate`, `evalq server services`, API replicas started together with `evalq
server start --no-services --redis URL --detach`, and haproxy in front (`balancer.py`).

Clients (runners, campaigns) talk to `api_url`, the balancer. Every piece is started through
evalq's own commands, so what runs here is what the README tells a user to run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from flows.runtime.api import wait_until_answers
from flows.runtime.balancer import LocalBalancer
from flows.runtime.host import free_port
from flows.runtime.postgres import LocalPostgres
from flows.runtime.process_groups import terminate_group
from flows.runtime.redis_server import LocalRedis
from flows.runtime.scaled import DATABASE_ENV, REDIS_ENV
from flows.runtime.server_record import read_record
from flows.runtime.user_server import stop_server


def evalq_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ScaledStack:
    """`replicas` API replicas behind haproxy, the services apart, on PostgreSQL and Redis."""

    def __init__(self, folder: Path, replicas: int = 2, ui: bool = False, env: dict[str, str] | None = None):
        self.folder = Path(folder).resolve()
        self.ports = [free_port() for _ in range(replicas)]
        self.balancer_port = free_port()
        self.ui = ui
        self.extra_env = env or {}
        self.postgres: LocalPostgres | None = None
        self.redis: LocalRedis | None = None
        self.services: subprocess.Popen | None = None
        self.balancer: LocalBalancer | None = None

    @property
    def api_url(self) -> str:
        """The balancer's API URL: what clients (and the replicas' UI) use."""
        return f"http://127.0.0.1:{self.balancer_port}/api"

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}/api"

    def replica_home(self, index: int) -> Path:
        return self.folder / f"replica-{index}"

    def environment(self) -> dict[str, str]:
        """What every evalq command of the stack gets: the database and Redis, off the command line."""
        env = {**os.environ, DATABASE_ENV: self.postgres.url, REDIS_ENV: self.redis.url,
               "PREFECT_UI_API_URL": self.api_url, **self.extra_env}
        env.pop("PREFECT_API_URL", None)
        return env

    def start(self, timeout: float = 180.0) -> "ScaledStack":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.postgres = LocalPostgres().start()
        self.redis = LocalRedis(self.folder / "redis").start()
        self.balancer = LocalBalancer(self.folder / "haproxy", self.balancer_port, [f"127.0.0.1:{port}" for port in self.ports])
        env = self.environment()
        subprocess.run(evalq_argv("server", "migrate"), env=env, check=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        with open(self.folder / "services.log", "ab") as log:
            self.services = subprocess.Popen(evalq_argv("server", "services", "--home", str(self.folder / "services")),
                                             env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        starting = [
            subprocess.Popen(
                evalq_argv("server", "start", "--no-services", "--detach", "--port", str(port), "--home",
                           str(self.replica_home(i)), "--ui" if self.ui else "--no-ui"),
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i, port in enumerate(self.ports)
        ]
        for i, process in enumerate(starting):
            output, _ = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise RuntimeError(f"replica {i} did not start: {output.strip()}\n"
                                   f"{log_tail(self.replica_home(i) / 'prefect' / 'server.log')}")
        self.balancer.start()
        if not wait_until_answers(f"{self.api_url}/health", 30):
            raise RuntimeError(f"haproxy does not answer: {log_tail(self.balancer.folder / 'haproxy.log')}")
        return self

    def replica_server_pid(self, index: int) -> int:
        """The Prefect server process of replica `index` (the leader of its own process group)."""
        record = read_record(self.replica_home(index))
        if record is None:
            raise RuntimeError(f"replica {index} has no server record")
        children = Path(f"/proc/{record.pid}/task/{record.pid}/children").read_text().split()
        return int(children[0])

    def kill_replica(self, index: int) -> None:
        """SIGKILL replica `index`'s Prefect server and everything of its group."""
        os.killpg(self.replica_server_pid(index), signal.SIGKILL)

    def stop(self) -> None:
        for i in range(len(self.ports)):
            stop_server(self.replica_home(i), timeout=10)
        if self.services is not None:
            terminate_group(self.services, grace=10)
            self.services = None
        for part in (self.balancer, self.redis):
            if part is not None:
                part.stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def __enter__(self) -> "ScaledStack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
