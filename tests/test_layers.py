"""Imports that go one way (docs/architecture.md, "Layers"): the domain modules load without
Prefect (each in a fresh interpreter); flows/ never imports workpools/, which reaches the CLI
through the `evalq.commands` entry points and Prefect through its worker registry."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points

import pytest

from conftest import REPO

PREFECT_FREE = [
    "generate.models", "generate.jsonio", "generate.errors",
    "flows.naming", "flows.dispatch", "flows.prefetch", "flows.steering", "flows.slot_events", "flows.results_files",
    "flows.leaderboard", "flows.selection", "flows.pool_status", "flows.process_groups", "tui.models", "tui.aggregate",
]
"""The domain layer; `flows/outcomes.py` (Prefect's state types) is its one documented exception."""


@pytest.mark.parametrize("module", PREFECT_FREE)
def test_domain_modules_import_no_prefect(module):
    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    found = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", f"{module} imports {found.stdout.strip()}"


def test_the_evalq_command_line_loads_without_prefect():
    """Every command group (the entry points' too) loads without Prefect: a command that starts
    an embedded server starts it before its own Prefect import, so the two overlap."""
    probe = "import sys, flows.cli, flows.demo, flows.runner; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    found = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", f"the command line imports {found.stdout.strip()}"


def test_prefect_finds_every_worker_type_of_ours():
    """The `prefect.collections` entry points name the modules that define the worker classes."""
    from flows.work_pools import worker_class

    for pool_type, module in declared_entry_points("prefect.collections").items():
        if pool_type != "evalq-kubernetes":  # the kubernetes extra may be missing
            assert worker_class(pool_type).type == pool_type, module


def test_the_documented_domain_layer_is_the_one_tested():
    """Every module the Layers table puts in the domain row is in `PREFECT_FREE` (or is `outcomes`)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| domain |"))
    documented = {path.removesuffix(".py").replace("/", ".") for path in re.findall(r"`((?:flows|tui)/\w+\.py)`", row)}
    assert documented, "no modules found in the domain row"
    assert documented - {"flows.outcomes"} <= set(PREFECT_FREE), documented - set(PREFECT_FREE)


def imported_modules(path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, at any depth (functions too), and of every
    `importlib.import_module("...")` / `__import__("...")` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
            found.append((node.lineno, node.args[0].value))
    return found


def test_flows_never_imports_workpools():
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted((REPO / "flows").rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] == "workpools"
    ]
    assert not offenders, "flows/ is below workpools/ (docs/architecture.md, Layers):\n" + "\n".join(offenders)


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    """The scan above would miss nothing that hides in a function or behind importlib."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from workpools.prefork import X\n    import importlib\n"
                      "    return importlib.import_module('workpools.runner')\n")
    assert [module for _, module in imported_modules(sample)] == ["os", "workpools.prefork", "importlib", "workpools.runner"]


# -- how the CLI and the flows reach workpools/ --------------------------------------------------
def declared_entry_points(group: str) -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["entry-points"][group]


def test_the_installed_package_declares_the_command_groups_of_pyproject():
    installed = {entry.name: entry.value for entry in entry_points(group="evalq.commands")}
    assert installed == declared_entry_points("evalq.commands"), \
        "the installed metadata is older than pyproject.toml: run `pip install -e .` again"


def test_evalq_has_every_command_group_of_the_entry_points():
    import typer
    from typer.main import get_command

    from flows.cli import app

    commands = get_command(app).commands
    for name, value in declared_entry_points("evalq.commands").items():
        module, _, attribute = value.partition(":")
        target = getattr(__import__(module, fromlist=[attribute]), attribute)
        assert isinstance(target, typer.Typer) or callable(target), value
        assert name in commands, f"`evalq {name}` missing"
    assert "slurm-runners" in commands["workpools"].commands


@pytest.mark.parametrize("type_name", ["RUNNER_POOL_TYPE", "PREFORK_POOL_TYPE", "SLURM_POOL_TYPE", "KUBERNETES_POOL_TYPE"])
def test_each_pool_type_is_found_through_prefects_registry(type_name):
    """Each type of flows/naming.py has a `prefect.collections` entry point of its name, and
    Prefect's registry gives its worker class and base job template (in a fresh interpreter)."""
    from flows import naming

    pool_type = getattr(naming, type_name)
    assert pool_type in declared_entry_points("prefect.collections")
    probe = ("import sys; from flows.work_pools import base_job_template, worker_class; "
             f"t = {pool_type!r}; assert worker_class(t).type == t and base_job_template(t)['job_configuration']; "
             "print('prefect_kubernetes' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    if pool_type != naming.KUBERNETES_POOL_TYPE:  # only its own entry point was loaded
        assert found.stdout.strip() == "False"
