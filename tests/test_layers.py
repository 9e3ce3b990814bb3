"""Imports that go one way (docs/architecture.md, "Layers"): every module imports only the rooms
the table allows (imports inside functions and under TYPE_CHECKING count), no two modules import
each other even through others, the domain modules load without Prefect (each in a fresh
interpreter), and workpools/ reaches the CLI through the `evalq.commands` entry points and
Prefect through its worker registry."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from conftest import REPO

PREFECT_FREE = [
    "generate.models", "generate.jsonio", "generate.errors",
    "flows.naming", "flows.campaign.settings", "flows.campaign.plan", "flows.campaign.dispatch",
    "flows.campaign.prefetch", "flows.campaign.selection", "flows.campaign.run_history", "flows.slots.steering", "flows.slots.events",
    "flows.slots.pool_status", "flows.slots.quarantine_policy", "flows.slots.waiting", "flows.results.metrics_files",
    "flows.results.leaderboard", "flows.runtime.process_groups", "flows.runtime.liveness", "flows.runtime.supervisor",
    "flows.runtime.memory", "flows.campaign.kinds", "flows.campaign.thresholds", "flows.batch.items", "flows.batch.templates",
    "flows.batch.settings", "tui.models", "tui.aggregate", "tui.run_index",
]
"""The domain: contracts and pure logic; `flows/campaign/outcomes.py` (Prefect's state types) is its
one documented exception."""


@pytest.mark.parametrize("module", PREFECT_FREE)
def test_domain_modules_import_no_prefect(module):
    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    found = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", f"{module} imports {found.stdout.strip()}"


def test_the_evalq_command_line_loads_without_prefect():
    """Every command group (the entry points' too) loads without Prefect: a command that starts
    an embedded server starts it before its own Prefect import, so the two overlap."""
    probe = ("import sys, flows.cli.root, flows.cli.demo, flows.cli.launch; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))")
    found = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", f"the command line imports {found.stdout.strip()}"


def test_prefect_finds_every_worker_type_of_ours():
    """The `prefect.collections` entry points name the modules that define the worker classes."""
    from flows.runtime.work_pools import worker_class

    for pool_type, module in declared_entry_points("prefect.collections").items():
        if pool_type != "evalq-kubernetes":  # the kubernetes extra may be missing
            assert worker_class(pool_type).type == pool_type, module


def test_the_documented_domain_layer_is_the_one_tested():
    """Every module the Layers table puts in the domain row is in `PREFECT_FREE` (or is `outcomes`)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| domain |"))
    documented = {path.removesuffix(".py").replace("/", ".") for path in re.findall(r"`((?:flows|tui)/[\w/]+\.py)`", row)}
    assert documented, "no modules found in the domain row"
    assert documented - {"flows.campaign.outcomes"} <= set(PREFECT_FREE), documented - set(PREFECT_FREE)


# -- rooms and the one-way rule -----------------------------------------------------------------
LEVELS: list[list[str]] = [
    ["flows/naming.py"],
    ["flows/runtime/", "flows/results/", "flows/evaluators/", "flows/cloudlogging/", "flows/demo/"],
    ["flows/slots/"],
    ["flows/campaign/", "flows/episode.py"],
    ["flows/reports/"],
    ["flows/grader/", "flows/batch/"],
    ["flows/cli/", "flows/deployments.py", "flows/grading.py"],
]
"""flows/ from the bottom up: a room imports the rooms of lower levels only (and itself)."""
FLOWS_ROOMS = [room for level in LEVELS for room in level]
OTHER_RULES: dict[str, list[str]] = {
    "workpools/": ["flows/naming.py", "flows/runtime/", "flows/cloudlogging/"],
    "tui/": [room for room in FLOWS_ROOMS if room not in LEVELS[-1]],
    "generate/": [],
}
"""Beside flows/: where episodes run (plus entrypoint strings, not imports), the dashboard (never the CLI)."""
PROJECT = ("flows", "tui", "workpools", "generate")


def allowed_imports() -> dict[str, set[str]]:
    """Room -> the rooms it may import (`generate/`, the domain models, is open to all)."""
    rules = {room: set(FLOWS_ROOMS[:FLOWS_ROOMS.index(level[0])]) for level in LEVELS for room in level}
    rules.update({room: set(allowed) for room, allowed in OTHER_RULES.items()})
    return {room: allowed | {room, "generate/"} for room, allowed in rules.items()}


def rules_table() -> str:
    """The rules as docs/architecture.md shows them, top room first."""
    rows = ["| room | may import (besides itself and `generate/`) |", "| --- | --- |"]
    for room in list(OTHER_RULES)[:2]:
        rows.append(f"| `{room}` | {', '.join(f'`{r}`' for r in OTHER_RULES[room]) if room != 'tui/' else 'all of flows/ but the front ends of the last row'} |")
    for level in reversed(LEVELS):
        below = FLOWS_ROOMS[:FLOWS_ROOMS.index(level[0])]
        rows.append(f"| {', '.join(f'`{room}`' for room in level)} | "
                    f"{'the rows below' if below else 'nothing'} |")
    return "\n".join(rows)


def room_of(module: str) -> str | None:
    """`flows.slots.leaser` -> `flows/slots/`; `flows.episode` -> `flows/episode.py`."""
    parts = module.split(".")
    if parts[0] not in PROJECT:
        return None
    if parts[0] != "flows":
        return f"{parts[0]}/"
    if len(parts) == 1:
        return "flows/"
    as_file = f"flows/{parts[1]}.py"
    return as_file if as_file in FLOWS_ROOMS else f"flows/{parts[1]}/"


def project_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every module of the project under `root`."""
    found = {}
    for top in PROJECT:
        for path in sorted((root / top).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported_modules(path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, project module) of every import in a file, at any depth (functions and
    TYPE_CHECKING blocks too), and of every `importlib.import_module("...")` / `__import__("...")`
    with a literal name. `from package import module` is an import of that module."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, known(alias.name)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules]
            found += [(node.lineno, name) for name in submodules]
            if len(submodules) < len(node.names):
                found.append((node.lineno, known(node.module)))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
            found.append((node.lineno, known(node.args[0].value)))
    return [(line, module) for line, module in found if module]


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """Module -> {project module it imports: first line}."""
    modules = project_modules(root)
    graph = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for line, target in imported_modules(path, set(modules)):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def violations(root: Path) -> list[str]:
    """Imports against the rules, as `path:line: room imports room (module)`."""
    rules, graph, modules = allowed_imports(), import_graph(root), project_modules(root)
    found = []
    for name, edges in graph.items():
        room = room_of(name)
        if room not in rules:
            continue
        for target, line in edges.items():
            target_room = room_of(target)
            if target_room not in rules[room] and target_room != "flows/":
                found.append(f"{modules[name].relative_to(root)}:{line}: {room} imports {target_room} ({target})")
    return found


def circles(root: Path) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan)."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted(group + [node]))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_room():
    rooms = set(allowed_imports())
    assert not [name for name in project_modules(REPO) if room_of(name) not in rooms | {"flows/"}]


def test_imports_follow_the_rooms_table():
    found = violations(REPO)
    assert not found, "imports against docs/architecture.md, Layers:\n" + "\n".join(found)


def test_no_two_modules_import_each_other():
    found = circles(REPO)
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(group) for group in found)


def test_the_rules_table_is_the_one_documented():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert rules_table() in text, "docs/architecture.md, Layers, should show:\n" + rules_table()


def test_the_scan_finds_a_wrong_import_and_a_circle_hidden_in_functions(tmp_path):
    """The checks above would miss nothing that hides in a function, behind TYPE_CHECKING or importlib."""
    for top in PROJECT:
        (tmp_path / top).mkdir()
    (tmp_path / "flows" / "naming.py").write_text("def f():\n    from flows.slots import leaser\n")
    (tmp_path / "flows" / "slots").mkdir()
    (tmp_path / "flows" / "slots" / "__init__.py").write_text("")
    (tmp_path / "flows" / "slots" / "leaser.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import flows.naming\n")
    (tmp_path / "workpools" / "x.py").write_text("import importlib\nimportlib.import_module('flows.slots.leaser')\n")
    assert sorted(violations(tmp_path)) == [
        "flows/naming.py:2: flows/naming.py imports flows/slots/ (flows.slots.leaser)",
        "workpools/x.py:2: workpools/ imports flows/slots/ (flows.slots.leaser)",
    ]
    assert circles(tmp_path) == [["flows.naming", "flows.slots.leaser"]]


def test_no_module_is_over_400_lines():
    long = [f"{path.relative_to(REPO)}: {n}" for path in project_modules(REPO).values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400]
    assert not long, long


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

    from flows.cli.root import app

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
    probe = ("import sys; from flows.runtime.work_pools import base_job_template, worker_class; "
             f"t = {pool_type!r}; assert worker_class(t).type == t and base_job_template(t)['job_configuration']; "
             "print('prefect_kubernetes' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    if pool_type != naming.KUBERNETES_POOL_TYPE:  # only its own entry point was loaded
        assert found.stdout.strip() == "False"
