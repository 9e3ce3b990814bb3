"""This host's processes and ports: is a process alive, a free port, a child that dies with
its parent. Ending process groups is `process_groups.py`."""

from __future__ import annotations

import os
import socket


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies (Linux), so nothing is left behind."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def port_is_free(port: int) -> bool:
    """Whether nothing listens on `port` on loopback."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def is_loopback_url(url: str) -> bool:
    """Whether `url`'s host is this machine's loopback (`127.x`, `::1`, `localhost`): an address
    no other node can use. Names are not resolved: a cluster's own name may map to 127.0.1.1
    in its /etc/hosts (Debian does so) and still reach it from the other nodes."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_for_other_nodes() -> str:
    """A name or address of this host that other nodes can reach: its fully qualified (or
    plain) host name when that resolves to an address other than loopback, else the address of
    the interface that routes outward (a route lookup: nothing is sent), else its host name."""
    import ipaddress

    def routable(address: str) -> bool:
        return not ipaddress.ip_address(address.split("%")[0]).is_loopback

    for name in dict.fromkeys((socket.getfqdn(), socket.gethostname())):
        try:
            if any(routable(info[4][0]) for info in socket.getaddrinfo(name, None)):
                return name
        except OSError:
            continue
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: only the route is looked up
            address = probe.getsockname()[0]
        except OSError:
            return socket.gethostname()
    return address if routable(address) else socket.gethostname()
