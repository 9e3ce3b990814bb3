"""Imports that go one way: the domain modules load without Prefect (each in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

PREFECT_FREE = ["tui.models", "tui.aggregate", "flows.naming", "flows.slot_events", "flows.results_files", "flows.dispatch",
                "flows.process_groups"]


@pytest.mark.parametrize("module", PREFECT_FREE)
def test_domain_modules_import_no_prefect(module):
    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    found = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", f"{module} imports {found.stdout.strip()}"
