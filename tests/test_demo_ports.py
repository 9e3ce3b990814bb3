"""`evalq demo --port-base`: moving the demo's policy servers; a taken port is one line."""

from __future__ import annotations

import json
import subprocess
import sys

from test_policy_server import taken_port

from flows.cli.demo import RESOURCES_RAW, demo_inputs, demo_resources_raw
from flows.runtime.host import free_port


def test_port_base_gives_the_ith_server_port_base_plus_i_and_keeps_the_rest(tmp_path):
    assert demo_resources_raw(tmp_path, None) == RESOURCES_RAW
    original = json.loads(RESOURCES_RAW.read_text())
    shifted = json.loads(demo_resources_raw(tmp_path, 30000).read_text())
    servers = [s for servers in shifted.values() for s in servers]
    assert [s["port"] for s in servers] == list(range(30000, 30000 + len(servers)))
    for pool, pool_servers in original.items():
        for before, after in zip(pool_servers, shifted[pool], strict=True):
            assert {**before, "port": after["port"]} == after
    jobs_file, resources_file = demo_inputs(tmp_path, port_base=30000)
    ports = [s["port"] for servers in json.loads(resources_file.read_text()).values() for s in servers]
    assert sorted(ports) == list(range(30000, 30000 + len(servers)))
    assert json.loads(jobs_file.read_text())


def test_evalq_demo_on_a_taken_port_exits_2_with_one_line_and_the_way_out(tmp_path):
    with taken_port() as sock:
        busy = sock.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", "from flows.cli import app; app()", "demo", "--port-base", str(busy), "--home", str(tmp_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error == [f"error: policy server 127.0.0.1:{busy}: cannot listen on port {busy}: Address already in use (evalq demo --port-base N moves the demo's servers)"]
    assert "Traceback" not in done.stderr
    assert free_port()  # nothing else to clean up: the demo stopped before any Prefect server
