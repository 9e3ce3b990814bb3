"""Demo policy servers: a port that is taken is one line naming it, not a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from flows.demo.policy_server import PolicyServer, PolicyServerFleet
from flows.runtime.host import free_port
from generate.errors import InputError


def taken_port() -> socket.socket:
    """A listening socket on a free loopback port: the port is taken while it lives."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen()
    return sock


def test_a_taken_port_stops_the_fleet_with_one_line_naming_it():
    with taken_port() as sock:
        busy = sock.getsockname()[1]
        free = free_port()
        fleet = PolicyServerFleet([PolicyServer("127.0.0.1", free), PolicyServer("127.0.0.1", busy)])
        with pytest.raises(InputError) as caught:
            fleet.start()
    assert str(caught.value).startswith(f"policy server 127.0.0.1:{busy}: cannot listen on port {busy}: ")
    with socket.socket() as again:  # the server that did start was stopped with the fleet
        again.bind(("127.0.0.1", free))


def test_evalq_policy_servers_on_a_taken_port_exits_2_with_one_line(tmp_path):
    with taken_port() as sock:
        busy = sock.getsockname()[1]
        resources = tmp_path / "resources.json"
        resources.write_text(json.dumps({"bots": [{"host": "127.0.0.1", "port": busy}]}))
        done = subprocess.run(
            [sys.executable, "-c", "from flows.cli import app; app()", "policy-servers", str(resources)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: policy server 127.0.0.1:{busy}: cannot listen on port {busy}: Address already in use\n")
    assert done.stderr.count("\n") == 1


def test_evalq_policy_servers_with_a_bad_resources_file_exits_2_with_one_line(tmp_path):
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"bots": [{"host": "127.0.0.1", "port": "x"}]}))
    done = subprocess.run(
        [sys.executable, "-c", "from flows.cli import app; app()", "policy-servers", str(resources)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: {resources}: bots.0.port: Input should be a valid integer\n"
