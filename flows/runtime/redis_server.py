"""A throwaway Redis from Debian's `redis-server`, for the tests and the benchmarks.

On loopback, in the foreground of a session of its own, nothing saved to disk. A real
deployment brings its own Redis and passes its URL to `evalq server start --redis URL`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from flows.runtime.host import die_with_parent, free_port
from flows.runtime.process_groups import terminate_group


def redis_answers(port: int) -> bool:
    """Whether a Redis on loopback `port` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class LocalRedis:
    """`redis-server` on 127.0.0.1; `url` is its first database."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> "LocalRedis":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder)]
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while not redis_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate_group(self.process, grace=5)
            self.process = None

    def __enter__(self) -> "LocalRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
