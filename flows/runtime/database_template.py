"""A migrated SQLite database to copy, so an embedded server skips Prefect's migrations.

A fresh SQLite database spends most of a server's start in migrations (15-20 s here), so a new
home starts from a copy of a migrated database, with Prefect's block types registered, made once
per user and Prefect version (`migrated_database()`, under `~/.cache/evalq/`); a server on such
a copy skips both steps at start (`SKIP_DATABASE_PREPARATION`, about 3 s here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evalq"


PREPARE_DATABASE = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def prepare():
    db = provide_database_interface()
    await db.create_db()
    async with await db.session() as session:
        await run_block_auto_registration(session=session)
        await session.commit()

asyncio.run(prepare())
"""
"""Migrate a fresh database and register Prefect's block types: what a server does at its first start."""


SEEDED_MARKER = "prefect.db.seeded"
"""Beside a home's database made from the template: its server may skip migrations and block registration."""


def prefect_version() -> str:
    """The installed Prefect's version, without importing Prefect (1.5 s: the server's own start
    waits for the caller's)."""
    from importlib.metadata import version

    return version("prefect")


def migrated_database() -> Path:
    """A SQLite database with this Prefect version's migrations applied and block types registered
    (made on first use)."""
    template = cache_dir() / f"prefect-{prefect_version()}-blocks.db"
    if template.exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        env = {**os.environ, "PREFECT_HOME": scratch}
        env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        subprocess.run(
            [sys.executable, "-c", PREPARE_DATABASE],
            env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.replace(Path(scratch) / "prefect.db", template)  # atomic: concurrent makers both succeed
    return template


def seed_database(home: Path) -> bool:
    """Give a new server home a prepared database; True if the home's database came from one."""
    database, marker = home / "prefect.db", home / SEEDED_MARKER
    if database.exists():
        return marker.exists() and marker.read_text(encoding="utf-8").strip() == prefect_version()
    try:
        template = migrated_database()
    except (OSError, subprocess.CalledProcessError):
        return False  # the server migrates a fresh database itself, only slower
    partial = database.with_suffix(".db.partial")
    shutil.copyfile(template, partial)
    os.replace(partial, database)
    marker.write_text(prefect_version() + "\n", encoding="utf-8")
    return True


SKIP_DATABASE_PREPARATION = {
    "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    # Else the server imports every collection (ours pull in prefect-kubernetes): 1.8 s of its start.
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}
