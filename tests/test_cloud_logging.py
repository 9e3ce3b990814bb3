"""Google Cloud Logging: the real `google-cloud-logging` client against the tests' own
`entries:write` / `entries:list` endpoint on loopback (`logging_endpoint.py`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli.root import app
from flows.cloudlogging.severity import parse_severity
from logging_endpoint import LoggingEndpoint

REPO = Path(__file__).resolve().parent.parent
PROJECT = "evalq-test"


@pytest.fixture
def endpoint(monkeypatch):
    with LoggingEndpoint() as endpoint:
        monkeypatch.setenv("EVALQ_LOGGING_ENDPOINT", endpoint.url)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
        monkeypatch.setenv("NO_GCE_CHECK", "true")
        yield endpoint


def wait_for(predicate, what: str, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stream_logs(*args: str) -> subprocess.Popen:
    """`evalq stream-logs` as a subprocess of this environment (endpoint and project included)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "stream-logs", *args], env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("line, severity", [
    ("12:00:01.123 | WARNING | prefect.flow_runs - Leased 127.0.0.1:9000", "WARNING"),
    ("01:02:03.004 | ERROR   | Flow run 'brave-otter' - Finished in state Failed", "ERROR"),
    ("ERROR:root:boom", "ERROR"),
    ("INFO:     127.0.0.1:5000 - \"GET /health HTTP/1.1\" 200 OK", "INFO"),
    ("2026-11-22 01:00:00,123 - jobqueue - CRITICAL - disk full", "CRITICAL"),
    ("[WARN] slow policy server", "WARNING"),
    ("DEBUG loading simulator", "DEBUG"),
    ("the episode raised an error", "DEFAULT"),
    ("Traceback (most recent call last):", "DEFAULT"),
    ("12:00:01.123 | INFO    | prefect - message says ERROR: later", "INFO"),
])
def test_severity_from_the_line(line, severity):
    assert parse_severity(line) == severity


class TestStreamLogs:
    def test_echoes_and_writes_every_line_with_its_severity_at_eof(self, endpoint):
        lines = ["INFO:root:started", "12:00:01.123 | WARNING | prefect.flow_runs - slow", "ERROR:x:boom", "plain line"]
        process = stream_logs("jobqueue", "--interval", "3600")
        out, err = process.communicate("\n".join(lines) + "\n", timeout=60)
        assert process.returncode == 0, err
        assert out == "\n".join(lines) + "\n"
        assert endpoint.writes == [4]  # one batch, flushed at EOF
        assert endpoint.texts() == lines
        assert [entry["severity"] for entry in endpoint.entries] == ["INFO", "WARNING", "ERROR", "DEFAULT"]
        assert {entry["logName"] for entry in endpoint.entries} == {f"projects/{PROJECT}/logs/jobqueue"}
        assert {entry["resource"]["type"] for entry in endpoint.entries} == {"global"}

    def test_flushes_on_the_interval_before_eof(self, endpoint):
        process = stream_logs("jobqueue", "--interval", "0.2")
        try:
            process.stdin.write("ERROR:x:first\n")
            process.stdin.flush()
            wait_for(lambda: endpoint.texts() == ["ERROR:x:first"], "the periodic flush")
            assert process.poll() is None  # still reading: the entry went out before EOF
        finally:
            process.communicate("", timeout=60)
        assert process.returncode == 0

    def test_ctrl_c_loses_nothing_that_was_read(self, endpoint):
        process = stream_logs("jobqueue", "--interval", "3600")
        lines = [f"INFO:root:line {n}" for n in range(50)]
        process.stdin.write("\n".join(lines) + "\n")
        process.stdin.flush()
        echoed = [process.stdout.readline().rstrip("\n") for _ in lines]  # every line was read
        assert echoed == lines
        assert endpoint.writes == []  # nothing sent yet: only the interrupt can send them
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.returncode == 130
        assert endpoint.texts() == lines

    def test_a_closed_output_pipe_stops_the_echo_not_the_logging(self, endpoint):
        process = stream_logs("jobqueue", "--interval", "3600")
        process.stdin.write("INFO:root:first\n")
        process.stdin.flush()
        assert process.stdout.readline() == "INFO:root:first\n"
        process.stdout.close()  # like `| head -1`
        out, err = process.communicate("INFO:root:second\nINFO:root:third\n", timeout=60)
        assert process.returncode == 0, err
        assert err == ""
        assert endpoint.texts() == ["INFO:root:first", "INFO:root:second", "INFO:root:third"]

    def test_unwritable_entries_are_reported_with_exit_1(self, endpoint, monkeypatch):
        from flows.runtime.host import free_port

        monkeypatch.setenv("EVALQ_LOGGING_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nobody listens
        process = stream_logs("jobqueue", "--interval", "3600")
        out, err = process.communicate("ERROR:x:one\nERROR:x:two\n", timeout=120)
        assert process.returncode == 1
        assert out == "ERROR:x:one\nERROR:x:two\n"
        assert err.startswith("error: 2 log entries not written to jobqueue: ")
        assert len(err.strip().splitlines()) == 1

    def test_missing_project_is_one_line_and_exit_2(self, endpoint, monkeypatch):
        monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
        monkeypatch.delenv("GCLOUD_PROJECT", raising=False)
        process = stream_logs("jobqueue")
        out, err = process.communicate("hello\n", timeout=60)
        assert process.returncode == 2
        assert err.strip().splitlines() == ["error: no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT"]
        assert endpoint.entries == []


def test_missing_credentials_is_one_line_and_exit_2(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GOOGLE_", "EVALQ_LOGGING", "CLOUDSDK"))}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true", PYTHONPATH=str(REPO))
    for command in (["stream-logs", "jobqueue"], ["logs", "jobqueue", "--project", "p"]):
        done = subprocess.run([sys.executable, "-m", "flows.cli", *command], env=env, input="x\n",
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            "error: no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a key file "
            "or run `gcloud auth application-default login`"
        ]


def stored(text: str, age: timedelta, severity: str = "INFO", log: str = "jobqueue", **labels) -> dict:
    when = (datetime.now(timezone.utc) - age).isoformat().replace("+00:00", "Z")
    return {"logName": f"projects/{PROJECT}/logs/{log}", "timestamp": when, "severity": severity,
            "textPayload": text, "labels": labels, "resource": {"type": "global"}}


class TestReadLogs:
    @pytest.fixture
    def history(self, endpoint):
        endpoint.entries.extend([
            stored("too old", timedelta(days=5), team="alpha"),
            stored("alpha ok", timedelta(days=2), team="alpha"),
            stored("beta ok", timedelta(days=1), team="beta"),
            stored("alpha failed", timedelta(hours=1), "ERROR", team="alpha"),
            stored("other log", timedelta(hours=1), log="elsewhere", team="alpha"),
        ])
        return endpoint

    def test_since_and_filter_to_an_output_file(self, history, tmp_path):
        output = tmp_path / "logs.json"
        result = CliRunner().invoke(app, ["logs", "jobqueue", "--since", "3d", "--filter", 'labels.team="alpha"', "--output", str(output)])
        assert result.exit_code == 0, result.output
        entries = json.loads(output.read_text())
        assert [entry["payload"] for entry in entries] == ["alpha ok", "alpha failed"]
        assert [entry["severity"] for entry in entries] == ["INFO", "ERROR"]
        assert entries[0]["labels"] == {"team": "alpha"}
        assert history.filters[-1].startswith(f'logName="projects/{PROJECT}/logs/jobqueue" AND timestamp>="')
        assert history.filters[-1].endswith('AND (labels.team="alpha")')

    def test_default_window_is_one_day_on_stdout(self, history):
        result = CliRunner().invoke(app, ["logs", "jobqueue", "--since", "1d"])
        assert result.exit_code == 0, result.output
        assert [entry["payload"] for entry in json.loads(result.output)] == ["alpha failed"]

    def test_bad_since_keeps_the_earlier_output(self, history, tmp_path):
        output = tmp_path / "logs.json"
        output.write_text("[]\n")
        result = CliRunner().invoke(app, ["logs", "jobqueue", "--since", "three days", "--output", str(output)])
        assert result.exit_code == 2
        assert "--since 'three days'" in result.output
        assert output.read_text() == "[]\n"


def test_episode_entries_carry_the_episode_labels(prefect_server, endpoint, monkeypatch, tmp_path):
    """An episode with EVALQ_CLOUD_LOGGING=1: its run log lands in Cloud Logging, labelled."""
    from prefect import get_client

    from flows.cloudlogging.attach import close_cloud_logging
    from flows.slots.pools import apply_pools
    from kit import make_fleet, make_job
    from test_episode import episode

    monkeypatch.setenv("EVALQ_CLOUD_LOGGING", "1")
    monkeypatch.setenv("EVALQ_CLOUD_LOGGING_NAME", "episodes")
    fleet, resources = make_fleet({"gcl_pool": [1]})

    async def apply():
        async with get_client() as client:
            await apply_pools(client, resources)

    asyncio.run(apply())
    job = make_job(tmp_path, "alpha", "pick", 7, ["gcl_pool"])
    try:
        with fleet:
            state = episode(job, resources, tmp_path / "results", campaign="finals")
    finally:
        close_cloud_logging()
    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    entries = [entry for entry in endpoint.entries if entry["logName"] == f"projects/{PROJECT}/logs/episodes"]
    assert entries, "no episode entries reached Cloud Logging"
    assert any("Leased" in (entry.get("textPayload") or "") for entry in entries)
    assert "INFO" in {entry["severity"] for entry in entries}
    for entry in entries:
        assert entry["labels"]["campaign"] == "finals"
        assert entry["labels"]["team"] == "alpha"
        assert entry["labels"]["task"] == "pick"
        assert entry["labels"]["instance"] == "7"
        assert entry["labels"]["flow_run_id"] == flow_run_id
        assert entry["labels"]["attempt"] == "1"
    assert any("Leased" in line for line in prefect_log_lines(state.state_details.flow_run_id))  # the UI keeps its logs


def prefect_log_lines(flow_run_id) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)

    async def read():
        async with get_client() as client:
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))

    return [log.message for log in asyncio.run(read())]


def test_runs_sharing_a_process_keep_their_own_labels(endpoint):
    """One handler, several flow runs (a warm runner): each record labelled by its own run; others dropped."""
    import logging

    from flows.cloudlogging.client import make_client
    from flows.cloudlogging.handler import RunLabelsHandler

    handler = RunLabelsHandler(make_client(), "shared")
    handler.register("run-a", {"team": "alpha", "flow_run_id": "run-a"})
    handler.register("run-b", {"team": "beta", "flow_run_id": "run-b"})
    logger = logging.getLogger("test.cloudlogging.shared")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.warning("from a", extra={"flow_run_id": "run-a"})
        logger.info("from b", extra={"flow_run_id": "run-b"})
        logger.info("from nobody", extra={"flow_run_id": "run-c"})
        logger.info("not a run at all")
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    sent = {entry["textPayload"]: entry for entry in endpoint.entries}
    assert set(sent) == {"from a", "from b"}
    assert (sent["from a"]["labels"]["team"], sent["from a"]["severity"]) == ("alpha", "WARNING")
    assert (sent["from b"]["labels"]["team"], sent["from b"]["labels"]["flow_run_id"]) == ("beta", "run-b")
