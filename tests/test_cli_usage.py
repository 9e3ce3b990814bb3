"""Click's usage errors as one line (`flows/cli/usage.py`), from the real `evalq` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest


def evalq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, names", [
    (["campaign", "run", "--max-in-flight", "0"], "evalq campaign run: Invalid value for '--max-in-flight'"),
    (["runner", "--poll-seconds", "0"], "evalq runner: Invalid value for '--poll-seconds'"),  # a group from workpools/
    (["campaign", "report"], "evalq campaign report: Missing argument 'name'"),
    (["campaign", "nosuch"], "evalq campaign: No such command 'nosuch'"),
])
def test_a_usage_error_is_one_line_naming_the_command_and_the_option(args, names):
    result = evalq(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {names}"), result.stderr
    assert lines[0].endswith("--help)")


def test_no_arguments_still_show_the_help():
    result = evalq("campaign")
    assert result.returncode == 2
    assert "Commands" in result.stdout + result.stderr and "report" in result.stdout + result.stderr


@pytest.mark.parametrize("args, problem", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--refresh", "0"], "argument --refresh: must be a number of seconds above 0, not '0'"),
    (["--refresh", "soon"], "argument --refresh: must be a number of seconds above 0, not 'soon'"),
])
def test_evaltui_says_bad_arguments_in_one_line_too(args, problem):
    result = subprocess.run([sys.executable, "-m", "tui.app", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: evaltui: {problem} (see evaltui --help)"], result.stderr
