"""`evalq demo`, the README's first command, as a new user runs it: a clean, complete run."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_runs_the_whole_example_campaign_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # its own embedded server
    result = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--home", str(tmp_path / "home")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert re.search(r"done now / before\s*│\s*44 / 0", output), output[-4000:]
    assert re.search(r"Policy servers busy \d+% of the campaign's span", output), output[-2000:]
    for noise in ("Traceback", "ERROR", "WARNING", "Error logging to API", "Unable to connect"):
        assert noise not in output, f"{noise!r} in a clean run:\n{output[-4000:]}"
