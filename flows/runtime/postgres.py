"""A throwaway PostgreSQL cluster from Debian's packages, for the tests and the benchmarks.

No systemd and no root-owned service: `initdb` into a folder of its own, `pg_ctl start` on a
loopback port with trust authentication, one database for Prefect. When run as root (CI), the
cluster runs as the `postgres` user that Debian's package creates, since PostgreSQL refuses
to run as root. A real deployment brings its own database and passes its URL to
`evalq server start --database URL`.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from flows.runtime.host import free_port

DATABASE = "prefect"


def postgres_bindir() -> Path:
    """Where Debian keeps `initdb` and `pg_ctl` (they are not on PATH there)."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH")


class LocalPostgres:
    """A PostgreSQL server on 127.0.0.1 with its own data folder; `url` is Prefect's connection URL."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="evalq-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return self.url_of(DATABASE)

    def url_of(self, database: str) -> str:
        """Prefect's connection URL of one database of this cluster."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, database: str) -> str:
        """A new, empty database in this cluster (one per Prefect server); its URL."""
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database)
        return self.url_of(database)

    def run(self, *argv: str) -> None:
        subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]], check=True, user=self.user,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def start(self) -> "LocalPostgres":
        self.root.chmod(0o755)
        if self.user:
            shutil.chown(self.root, self.user)
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self.run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", options)
        self.create_database(DATABASE)
        return self

    def stop(self) -> None:
        if self.data.exists():
            try:
                self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
