"""Demo policy servers: a port that is taken is one line naming it, not a traceback."""

from __future__ import annotations

import json
import signal
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
    assert done.stderr == (f"error: policy server 127.0.0.1:{busy}: cannot listen on port {busy}: Address already in use "
                           "(evalq policy-servers --port-base N serves them on ports N, N+1, ...)\n")


def test_evalq_policy_servers_with_a_bad_resources_file_exits_2_with_one_line(tmp_path):
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"bots": [{"host": "127.0.0.1", "port": "x"}]}))
    done = subprocess.run(
        [sys.executable, "-c", "from flows.cli import app; app()", "policy-servers", str(resources)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: {resources}: bots.0.port: Input should be a valid integer\n"


def test_evalq_policy_servers_port_base_moves_them_and_writes_the_resources_that_name_them(tmp_path):
    with taken_port() as sock:
        busy = sock.getsockname()[1]
        resources = tmp_path / "resources.json"
        original = {"bots": [{"host": "127.0.0.1", "port": busy, "capacity": 2}], "more": [{"host": "127.0.0.1", "port": busy},
                                                                                          {"host": "127.0.0.1", "port": 1}]}
        resources.write_text(json.dumps(original))
        base = free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", "from flows.cli import app; app()", "policy-servers", str(resources), "--port-base", str(base)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout.readline() == "serving 2 policy servers\n"
            moved = tmp_path / f"resources.ports-{base}.json"
            assert [[s["port"] for s in servers] for servers in json.loads(moved.read_text()).values()] == [[base], [base, base + 1]]
            from websockets.sync.client import connect

            for port in (base, base + 1):
                with connect(f"ws://127.0.0.1:{port}", open_timeout=5):
                    pass
        finally:
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0
    assert stderr == f"servers moved to ports {base} and up: run the campaign with --resources {moved}\n"
    assert json.loads(resources.read_text()) == original  # the file given is never rewritten
