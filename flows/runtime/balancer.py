"""haproxy in front of Prefect API replicas: its configuration (`evalq server haproxy-config`),
and a throwaway haproxy for the tests and the benchmarks.

What the configuration does and why (measured with Prefect 3.9.1, haproxy 2.6, README "Several
API replicas"): a health check of `/api/health` every second marks a dead replica down within
~2 s and cuts the sessions it held (`on-marked-down shutdown-sessions`: a hung replica's
websockets reconnect at once instead of waiting); a connection refused meanwhile is sent to
another replica (`option redispatch`); upgraded websockets (events, logs) live under `timeout
tunnel`, well above the server's 20 s pings.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from flows.runtime.host import die_with_parent
from flows.runtime.process_groups import terminate_group
from generate.errors import InputError

TEMPLATE = """\
# haproxy in front of Prefect API replicas (`evalq server haproxy-config`; README, "Several API replicas").
global
    log stdout format raw local0 notice
    maxconn 4096
{global_extra}
defaults
    mode http
    log global
    option redispatch          # a replica that refuses a connection: the request goes to another
    retries 2
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h          # websockets (events, logs) once upgraded; the server pings every 20 s
    timeout http-keep-alive 10s
    timeout client-fin 5s

frontend prefect
    bind {listen}
    default_backend prefect_api

backend prefect_api
    balance roundrobin
    option httpchk
    http-check send meth GET uri /api/health
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|\*")
"""A host haproxy reads: a name, an IPv4 address, an IPv6 one in brackets, or `*` (every interface)."""


def check_address(value: str, option: str) -> str:
    """`host:port` (a port in 1..65535), else one line naming `option`; nothing else goes into
    the configuration (a space or a newline would be a directive of its own)."""
    host, _, port = value.rpartition(":")
    if not HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(None, f"{option}: expected host:port, got {value!r}")
    return value


def haproxy_config(listen: str, replicas: list[str], stats_socket: Path | None = None) -> str:
    """haproxy.cfg balancing `listen` (host:port) over `replicas` (host:port each)."""
    check_address(listen, "--listen")
    if not replicas:
        raise InputError(None, "--replica: name at least one API replica (host:port)")
    servers = "\n".join(f"    server replica{i} {check_address(address, '--replica')} check"
                        for i, address in enumerate(replicas, 1))
    extra = f"    stats socket {stats_socket} mode 600 level admin\n" if stats_socket else ""
    return TEMPLATE.format(listen=listen, servers=servers, global_extra=extra)


class LocalBalancer:
    """haproxy on loopback with a configuration of `haproxy_config` (tests, benchmarks)."""

    def __init__(self, folder: Path, port: int, replicas: list[str]):
        self.folder = Path(folder)
        self.port = port
        self.replicas = replicas
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> "LocalBalancer":
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "haproxy.cfg"
        config.write_text(haproxy_config(f"127.0.0.1:{self.port}", self.replicas), encoding="utf-8")
        with open(self.folder / "haproxy.log", "ab") as log:
            self.process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate_group(self.process, grace=5)
            self.process = None
