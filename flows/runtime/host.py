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
