"""`evalq demo`, the README's first command, as a new user runs it: a clean, complete run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time


def test_demo_runs_the_whole_example_campaign_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # its own embedded server
    record = tmp_path / "home" / "server.json"
    seen: list[dict] = []
    done = threading.Event()

    def watch_server_record():  # what evaltui reads to find the running server
        while not done.is_set() and not seen:
            if record.exists():
                seen.append(json.loads(record.read_text()))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_server_record)
    watcher.start()
    try:
        result = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--home", str(tmp_path / "home")],
                                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    finally:
        done.set()
        watcher.join()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert re.search(r"done now / before\s*│\s*44 / 0", output), output[-4000:]
    assert re.search(r"Policy servers busy \d+% of the campaign's span", output), output[-2000:]
    for noise in ("Traceback", "ERROR", "WARNING", "Error logging to API", "Unable to connect"):
        assert noise not in output, f"{noise!r} in a clean run:\n{output[-4000:]}"
    assert seen and seen[0]["api_url"].startswith("http://127.0.0.1:") and seen[0]["pid"] > 0
    assert not record.exists()  # gone with the server
