"""One rule for finding Prefect (flows/runtime/discovery.py), command by command: right after an
embedded `evalq campaign run` in a folder, then with the user's `evalq server` up, then with
PREFECT_API_URL and with --api. Real servers, real campaigns, each command a subprocess with
the session's PREFECT_API_URL removed and a server home of its own (never the user's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flows.runtime.server_record import read_record
from kit import make_fleet, make_job, write_inputs

HERE = "here"
"""The campaign run on the folder's embedded database."""
THERE = "there"
"""The campaign run on the user's `evalq server`."""
FAST = ["--evaluator-option", "steps=2", "--evaluator-option", "step_seconds=0.05", "--evaluator-option", "load_seconds=0.1"]
NO_SERVER = "error: no Prefect server found: pass --api URL, set PREFECT_API_URL, or start one with `evalq server start --detach`"


class Project:
    """A folder with jobs, resources and live policy servers, and the environment of its commands."""

    def __init__(self, root: Path):
        self.root = root
        self.folder = root / "project"
        self.folder.mkdir()
        self.server_home = root / "server"
        self.env = {**os.environ, "EVALQ_SERVER_HOME": str(self.server_home), "PREFECT_HOME": str(root / "prefect-client")}
        self.env.pop("PREFECT_API_URL", None)

    def evalq(self, *args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, cwd=self.folder, timeout=timeout)

    def ok(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        result = self.evalq(*args, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        return result

    def run_campaign(self, name: str, results: str) -> subprocess.CompletedProcess:
        return self.ok("campaign", "run", "--jobs", "jobs.json", "--resources", "resources.json", "--results-dir", results,
                       "--name", name, *FAST)

    @property
    def user_server_url(self) -> str:
        return read_record(self.server_home).api_url


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def server_line(result: subprocess.CompletedProcess) -> str:
    """The one line that says which Prefect server the command used."""
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Prefect server")]
    return line


def folder_is_not_served(project: Project) -> bool:
    return not (project.folder / ".evalq" / "server.json").exists()


# -- the rule's order, without servers --------------------------------------------------------
@pytest.fixture
def nothing_configured(monkeypatch, tmp_path):
    """No PREFECT_API_URL, no Prefect settings file, no user's server: the rule starts from nothing."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("EVALQ_SERVER_HOME", str(tmp_path / "no-server"))
    monkeypatch.chdir(tmp_path)


def test_the_option_wins_then_the_environment_then_the_profile(nothing_configured, monkeypatch, tmp_path):
    from flows.runtime.discovery import Source, configured_api, find_prefect

    assert configured_api() is None and find_prefect() is None
    profiles = tmp_path / "prefect-home" / "profiles.toml"
    profiles.parent.mkdir()
    profiles.write_text('active = "cluster"\n[profiles.cluster]\nPREFECT_API_URL = "http://profile:4200/api"\n')
    check = ("from flows.runtime.discovery import configured_api; f = configured_api(); print(f.source.name, f.api_url)")
    in_fresh_process = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True,
                                      env={**os.environ})  # Prefect reads its profile when it is imported
    assert in_fresh_process.stdout.split() == ["PROFILE", "http://profile:4200/api"]
    monkeypatch.setenv("PREFECT_API_URL", "http://env:4200/api")
    assert (configured_api().source, configured_api().api_url) == (Source.ENVIRONMENT, "http://env:4200/api")
    assert (configured_api("http://opt:1/api").source, configured_api("http://opt:1/api").api_url) == (Source.OPTION, "http://opt:1/api")


def test_nothing_found_is_one_line_with_the_fix(nothing_configured, tmp_path):
    from flows.runtime.discovery import no_server, require_prefect
    from generate.errors import InputError

    with pytest.raises(InputError) as caught:
        require_prefect()
    assert f"error: {caught.value}" == NO_SERVER
    assert str(no_server(".evalq")).endswith("; no campaign has run in this folder (.evalq/ holds no embedded database)")


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:4200/api", True), ("http://127.9.9.9/api", True), ("http://[::1]:4200/api", True),
    ("http://localhost:4200/api", True), ("http://api.localhost/api", True), ("http://192.0.2.7:4200/api", False),
    ("http://head-node:4200/api", False), ("https://prefect.example/api", False),
])
def test_loopback_urls(url, loopback):
    from flows.runtime.host import is_loopback_url

    assert is_loopback_url(url) is loopback


def test_the_url_other_nodes_use():
    from flows.runtime.host import is_loopback_url
    from flows.runtime.user_server import advertised_url
    from generate.errors import InputError

    assert advertised_url("127.0.0.1", 4200) is None  # loopback only: nothing to advertise
    everywhere = advertised_url("0.0.0.0", 4200)
    assert everywhere.startswith("http://") and everywhere.endswith(":4200/api") and not is_loopback_url(everywhere)
    assert advertised_url("0.0.0.0", 4200, "http://head-node:4200") == "http://head-node:4200/api"
    assert advertised_url("0.0.0.0", 4200, "https://prefect.example/api/") == "https://prefect.example/api"
    with pytest.raises(InputError, match="--advertise 'head-node:4200': expected a URL"):
        advertised_url("0.0.0.0", 4200, "head-node:4200")


def test_a_service_finds_the_user_server_or_starts_it_and_leaves_it_up(nothing_configured, tmp_path):
    from flows.runtime.discovery import Source, find_or_start_user_server
    from flows.runtime.host import process_alive

    started = find_or_start_user_server()
    try:
        assert (started.source, started.started) == (Source.USER_SERVER, True)
        assert "started now; it stays up (`evalq server stop`)" in started.describe()
        again = find_or_start_user_server()
        assert (again.api_url, again.started) == (started.api_url, False)  # found, not started twice
    finally:
        record = read_record(tmp_path / "no-server")
        stopped = subprocess.run([sys.executable, "-m", "flows.cli", "server", "stop"], capture_output=True, text=True,
                                 env={**os.environ}, timeout=60)
    assert stopped.returncode == 0 and not process_alive(record.pid)


def test_a_campaign_refuses_a_folder_another_campaign_serves(prefect_server, tmp_path):
    from flows.runtime.folder_server import take_over
    from flows.runtime.server_record import ServerRecord
    from generate.errors import InputError

    home = tmp_path / ".evalq"
    home.mkdir()
    record = ServerRecord(api_url=prefect_server.api_url, pid=prefect_server.process.pid)  # a live, non-reading server
    (home / "server.json").write_text(record.model_dump_json())
    with pytest.raises(InputError) as refused:
        take_over(home)
    assert str(refused.value) == (f"{home}/server.json: another evalq command serves this folder's database at "
                                  f"{prefect_server.api_url} (server pid {prefect_server.process.pid}): run again once "
                                  "it ends, or use another --home")
    assert prefect_server.process.poll() is None  # left alone


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """An embedded campaign has run in the folder; nothing serves its database any more."""
    project = Project(tmp_path_factory.mktemp("discovery"))
    fleet, resources = make_fleet({"d_1": [1]})
    write_inputs(project.folder, [make_job(project.folder, "d", "pick", i, ["d_1"]) for i in range(2)], resources)
    with fleet:
        ran = project.run_campaign(HERE, "results")
        assert "(this folder's embedded database" in server_line(ran) and "served for this command" in server_line(ran)
        assert folder_is_not_served(project)
        yield project  # the policy servers stay up for the module's campaigns
        project.evalq("server", "stop")


@pytest.fixture(scope="module")
def user_server(project):
    """The user's `evalq server` is up (started after the embedded campaign), with a campaign of its own."""
    started = project.ok("server", "start", "--detach", "--no-ui", "--port", str(free_port()))
    assert "evalq server ready" in started.stdout
    ran = project.run_campaign(THERE, "results-there")
    assert server_line(ran).endswith("(your evalq server)")
    assert folder_is_not_served(project)
    return project


def free_port() -> int:
    from flows.runtime.host import free_port

    return free_port()


def test_after_an_embedded_campaign_the_commands_read_its_folder_or_say_what_to_do(project):
    report = project.ok("campaign", "report", HERE)
    assert "Campaign here" in report.stdout and "2 done" in report.stdout
    assert "(this folder's embedded database .evalq, served for this command)" in server_line(report)
    for args in (["campaign", "status", HERE], ["campaign", "list"], ["campaign", "purge", HERE, "--dry-run"],
                 ["pools", "status", "resources.json"], ["pools", "apply", "resources.json"]):
        result = project.ok(*args)
        assert "this folder's embedded database" in server_line(result), args
    assert HERE in project.ok("campaign", "list").stdout
    assert folder_is_not_served(project)  # each stopped the server it started
    # Commands that need a server of their own say so, with the fix.
    for args in (["submit", "--", "true"], ["queue"], ["runner", "--pool", "evalq-runner"], ["workpools", "apply"],
                 ["grader", "node", "--name", "n1"], ["workpools", "slurm-runners", "--pool", "evalq-runner", "--nodes", "1",
                                                      "--slots", "1", "--dry-run"]):
        assert one_error_line(project.evalq(*args)) == NO_SERVER, args
    other = project.root / "elsewhere"
    other.mkdir()
    nothing = subprocess.run([sys.executable, "-m", "flows.cli", "campaign", "report", HERE], capture_output=True, text=True,
                             env=project.env, cwd=other, timeout=60)
    assert one_error_line(nothing).startswith(NO_SERVER + "; no campaign has run in this folder (.evalq/ holds no embedded database)")


def test_evaltui_serves_the_folder_database_while_it_watches(project, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tui.watched import WatchedServer

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("EVALQ_SERVER_HOME", str(project.server_home))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        watched = WatchedServer(project.folder / ".evalq")
        assert not watched.configured()
        try:
            found = watched.find()
            assert found is not None and found.source.name == "FOLDER" and found.started
            runs = httpx.post(f"{found.api_url}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["campaign:here"]}}})
            assert len(runs.json()) == 2
            assert read_record(project.folder / ".evalq").reader
        finally:
            watched.close()
    assert folder_is_not_served(project)


def test_a_campaign_takes_the_folder_over_from_a_reader_which_serves_it_again_on_its_port(project):
    from flows.runtime.folder_server import FolderReader

    reader = FolderReader(project.folder / ".evalq")
    try:
        url = reader.open()
        assert reader.started
        ran = project.run_campaign("again", "results-again")  # on the folder's database, never a second server on it
        assert f"Prefect server: {url} (this folder's embedded database" in ran.stderr
        assert not reader.started and folder_is_not_served(project)  # taken over, then its campaign ended
        assert reader.open() == url and reader.started  # evaltui's revival: same URL
        runs = httpx.post(f"{url}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["campaign:again"]}}}).json()
        assert {run["state"]["type"] for run in runs} == {"COMPLETED"} and len(runs) == 2
    finally:
        reader.close()
    assert folder_is_not_served(project)


def test_with_the_user_server_up_commands_find_it_and_the_folder_campaign_stays_in_sight(user_server):
    project = user_server
    report = project.ok("campaign", "report", HERE)  # not on the user's server: read in the folder
    assert "2 done" in report.stdout and "(this folder's embedded database .evalq" in server_line(report)
    there = project.ok("campaign", "report", THERE)
    assert "2 done" in there.stdout and server_line(there).endswith("(your evalq server)")
    listed = project.ok("campaign", "list", "--json")
    assert {HERE, THERE} <= {c["name"] for c in json.loads(listed.stdout)}
    assert "Prefect servers:" in listed.stderr and "(your evalq server) and" in listed.stderr
    assert server_line(project.ok("campaign", "status", THERE)).endswith("(your evalq server)")
    assert server_line(project.ok("pools", "status", "resources.json")).endswith("(your evalq server)")
    assert server_line(project.ok("workpools", "apply", "--kind", "local")).endswith("(your evalq server)")
    submitted = project.ok("submit", "--", "true")  # the GPU queue finds the user's server
    assert server_line(submitted).endswith("(your evalq server)") and submitted.stdout.startswith("1\t")
    assert server_line(project.ok("queue")).endswith("(your evalq server)")
    assert "2 done" in project.ok("campaign", "report", HERE).stdout  # still in sight after `evalq submit`
    runner = project.ok("runner", "--pool", "evalq-runner", "--slots", "1", "--idle-timeout", "1")
    assert server_line(runner).endswith("(your evalq server)")
    loopback = project.evalq("workpools", "slurm-runners", "--pool", "evalq-runner", "--nodes", "1", "--slots", "1", "--dry-run")
    assert "this machine's loopback" in one_error_line(loopback)
    script = project.ok("workpools", "slurm-runners", "--pool", "evalq-runner", "--nodes", "1", "--slots", "1", "--dry-run",
                        "--allow-loopback")
    assert script.stdout.startswith("#!/bin/bash") and server_line(script).endswith("(your evalq server)")
    node = subprocess.Popen([sys.executable, "-m", "flows.cli", "grader", "node", "--name", "n1", "--log", "node.log"],
                            env=project.env, cwd=project.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert node.stdout.readline().startswith("node n1: runner")
    finally:
        node.send_signal(signal.SIGINT)
        _, stderr = node.communicate(timeout=60)
    assert f"Prefect server: {project.user_server_url} (your evalq server)" in stderr


@pytest.mark.parametrize("how", ["PREFECT_API_URL", "--api"])
def test_a_named_server_wins_and_is_the_only_one_read(user_server, how):
    project = user_server
    url = project.user_server_url

    def named(*args: str) -> subprocess.CompletedProcess:
        if how == "--api":
            return project.evalq(*args, "--api", url)
        return project.evalq(*args, env={"PREFECT_API_URL": url})

    for args in (["campaign", "report", THERE], ["campaign", "status", THERE], ["campaign", "list"],
                 ["campaign", "purge", THERE, "--dry-run"], ["pools", "status", "resources.json"], ["queue"],
                 ["workpools", "slurm-runners", "--pool", "evalq-runner", "--nodes", "1", "--slots", "1", "--dry-run",
                  "--allow-loopback"]):
        result = named(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert server_line(result) == f"Prefect server: {url} ({how})", args
    missing = one_error_line(named("campaign", "report", HERE))  # named: the folder is not looked at
    assert missing == f"error: campaign 'here': no episode runs on {url} ({how})"
    dead_url = f"http://127.0.0.1:{free_port()}/api"
    dead = project.evalq("campaign", "list", "--api", dead_url) if how == "--api" else \
        project.evalq("campaign", "list", env={"PREFECT_API_URL": dead_url})
    assert one_error_line(dead).startswith(f"error: Prefect API at {dead_url} unreachable") and f"(from {how})" in dead.stderr
