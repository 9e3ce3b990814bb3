"""The pieces of the scaled setup that need no running Prefect: the Redis settings every process
of the split shares, the haproxy configuration (checked by haproxy itself), and the one-line
refusals of `evalq server start|services|migrate` before anything starts. The setup running is
tests/test_scaled_server.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from flows.runtime.balancer import haproxy_config
from flows.runtime.scaled import check_redis_url, docket_url, redact_url, redis_environment, split_environment
from generate.errors import InputError

POSTGRES = "postgresql+asyncpg://prefect:secret@db.example/prefect"


def evalq(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("url, shown", [
    ("redis://:p#ss@h/0", "redis://***@h/0"),  # urlsplit would stop the user part at '#'
    ("redis://u:p/ss@h:6379/0", "redis://***@h:6379/0"),  # ... and at '/'
    ("redis://u:pw@h/0?password=zz", "redis://***@h/0"),  # a password in the query
    ("postgresql+asyncpg://prefect:secret@db.example/prefect", "postgresql+asyncpg://***@db.example/prefect"),
    ("user:pw@host", "***@host"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_printed_urls_never_show_a_password(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", ["redis://u:pw@h:abc/0", "redis://u:p/ss@h:6379/0", "redis://h/zero"])
def test_a_bad_redis_url_is_one_line_without_its_password(url):
    with pytest.raises(InputError) as refused:
        check_redis_url(url)
    assert str(refused.value).startswith("--redis: ") and "pw" not in str(refused.value) and "ss@" not in str(refused.value)


def test_every_process_of_the_split_gets_redis_for_messaging_ordering_leases_and_the_docket():
    env = redis_environment("redis://:pw@redis.example:6380/2")
    assert env["PREFECT_REDIS_MESSAGING_URL"] == "redis://:pw@redis.example:6380/2"
    assert env["PREFECT_SERVER_DOCKET_URL"] == "redis://:pw@redis.example:6380/3"  # its own database
    assert {env[k] for k in ("PREFECT_MESSAGING_BROKER", "PREFECT_MESSAGING_CACHE")} == {"prefect_redis.messaging"}
    assert env["PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"] == "prefect_redis.ordering"
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
    # Batched by 5 or every 10 s otherwise: a release event on a runner's open socket would be late.
    assert env["PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE"] == "1"
    assert docket_url("rediss://redis.example") == "rediss://redis.example/1"


def test_a_replica_skips_the_database_preparation_and_outlives_the_balancers_idle_connections():
    env = split_environment(POSTGRES, "redis://redis.example:6379/0", services=False)
    assert env["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"
    assert env["PREFECT_API_BLOCKS_REGISTER_ON_START"] == "false"
    assert int(env["PREFECT_SERVER_API_KEEPALIVE_TIMEOUT"]) > 10  # haproxy's `timeout http-keep-alive`
    assert "PREFECT_API_DATABASE_MIGRATE_ON_START" not in split_environment(None, "redis://r:6379", services=True)


@pytest.mark.parametrize("database, redis, problem", [
    (None, "redis://r:6379", "--no-services needs PostgreSQL"),
    ("sqlite+aiosqlite:///x.db", "redis://r:6379", "--no-services needs PostgreSQL"),
    (POSTGRES, None, "--no-services needs --redis"),
    (POSTGRES, "http://r:6379", "--redis: expected redis://"),
    (POSTGRES, "redis://r:6379/zero", "--redis: the path is a database number"),
])
def test_a_replica_without_a_shared_database_or_redis_is_refused(database, redis, problem):
    with pytest.raises(InputError, match=problem):
        split_environment(database, redis, services=False)


def test_the_haproxy_configuration_checks_health_fails_over_and_keeps_websockets():
    config = haproxy_config("0.0.0.0:4200", ["10.0.0.5:4201", "10.0.0.6:4201"])
    assert "bind 0.0.0.0:4200" in config
    assert "server replica1 10.0.0.5:4201 check" in config and "server replica2 10.0.0.6:4201 check" in config
    assert "uri /api/health" in config and "option redispatch" in config and "timeout tunnel 1h" in config
    for bad in ("10.0.0.5", "h x:80", "h\n    stats enable:80"):  # no port; a space or a newline: a directive of its own
        with pytest.raises(InputError, match="--replica: expected host:port"):
            haproxy_config("0.0.0.0:4200", [bad])
    assert "server replica1 [::1]:4201 check" in haproxy_config("*:4200", ["[::1]:4201"])
    with pytest.raises(InputError, match="--replica: name at least one"):
        haproxy_config("0.0.0.0:4200", [])


@pytest.mark.skipif(not shutil.which("haproxy"), reason="needs Debian's haproxy")
def test_haproxy_accepts_the_configuration_evalq_writes(tmp_path):
    written = evalq("server", "haproxy-config", "--listen", "127.0.0.1:14200", "--replica", "127.0.0.1:14201",
                    "--replica", "127.0.0.1:14202", "--output", str(tmp_path / "haproxy.cfg"))
    assert written.returncode == 0, written.stderr
    checked = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_commands_refuse_a_split_they_cannot_run_in_one_line(tmp_path):
    env = {"EVALQ_SERVER_HOME": str(tmp_path / "server")}
    for args, problem in [
        (("server", "start", "--no-services"), "error: --no-services needs PostgreSQL"),
        (("server", "start", "--no-services", "--database", POSTGRES, "--detach"), "error: --no-services needs --redis"),
        (("server", "services", "--database", POSTGRES), "error: --redis:"),
        (("server", "services", "--redis", "redis://r:6379"), "error: evalq server services needs PostgreSQL"),
        (("server", "migrate", "--database", "sqlite+aiosqlite:///x.db"), "error: evalq server migrate needs PostgreSQL"),
    ]:
        result = evalq(*args, env=env)
        assert result.returncode == 2 and result.stderr.startswith(problem), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "secret" not in result.stderr
    assert not (tmp_path / "server").exists()  # nothing started, nothing written
