"""The grading service as the tests run it: `evalq grader serve --nodes 2` as a real subprocess
on a free loopback port, a grader script of our own, and small httpx helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from flows.grader.auth import hash_token
from flows.runtime.host import die_with_parent, free_port

FINAL = {"completed", "failed", "cancelled"}
TOKENS = {"alice": "alice-token-123", "bob": "bob-token-456", "../Evil User": "evil-token-789"}
GRADER = """
import json, os, sys, time
solution, competition, results = sys.argv[1:4]
source = open(solution).read()
def setting(name, default):  # the solution says how the grader behaves: SLEEP=3 EXIT=1
    return float(source.split(name + "=")[1].split()[0]) if name + "=" in source else default
with open(os.path.join(os.path.dirname(results), "pid"), "w") as handle:
    handle.write(str(os.getpid()))
print("grading", competition, flush=True)
print("grader log line", file=sys.stderr, flush=True)
time.sleep(setting("SLEEP", 0))
if setting("EXIT", 0):
    sys.exit(int(setting("EXIT", 0)))
with open(results, "w") as handle:
    handle.write(json.dumps({"competition_id": competition, "score": len(source)}) + "\\n")
"""


def solution(sleep: float = 0, exit_code: int = 0) -> bytes:
    return f"# SLEEP={sleep} EXIT={exit_code}\nprint('hello')\n".encode()


def config(user: str = "alice", expected_time: float = 10, competition: str = "titanic", **extra) -> bytes:
    data = {"competition_id": competition, "project_id": "proj-1", "user_id": user,
            "expected_time": expected_time, "token": TOKENS.get(user, "nope"), **extra}
    return yaml.safe_dump({key: value for key, value in data.items() if value is not None}).encode()


class GraderService:
    """`evalq grader serve` in a subprocess; stop() sends SIGTERM like an operator would."""

    def __init__(self, home: Path, api_url: str):
        self.home = home
        self.api_url = api_url
        self.results_dir = home / "results"
        self.tokens_file = home / "TOKENS.yaml"
        self.tokens_file.write_text(yaml.safe_dump({
            "alice": TOKENS["alice"], "bob": hash_token(TOKENS["bob"]), "../Evil User": TOKENS["../Evil User"],
        }))
        self.grader = home / "grader.py"
        self.grader.write_text(GRADER)
        self.grade_command = f"{sys.executable} {self.grader} {{solution}} {{competition_id}} {{results}}"
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, max_wait_seconds: float = 120, timeout: float = 180) -> "GraderService":
        self.port = free_port()
        argv = [
            sys.executable, "-m", "flows.cli", "grader", "serve", "--tokens", str(self.tokens_file),
            "--host", "127.0.0.1", "--port", str(self.port), "--grade-command", self.grade_command,
            "--results-dir", str(self.results_dir), "--nodes", "2", "--max-upload-mb", "0.01",
            "--max-wait-seconds", str(max_wait_seconds), "--timeout-factor", "2", "--timeout-floor", "1",
        ]
        env = {**os.environ, "PREFECT_API_URL": self.api_url}
        with open(self.home / "serve.log", "ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.home / "serve.log").read_text()[-3000:]
            try:
                nodes = httpx.get(f"{self.url}/api/nodes", timeout=5).json()["nodes"]
                if len(nodes) == 2 and all(node["status"] == "active" for node in nodes):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"grading service not ready in {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def submit(self, code: bytes = b"", cfg: bytes | None = None, wait: bool = False, name: str = "solution.py",
               timeout: float = 180) -> httpx.Response:
        files = {"code": (name, code or solution()), "config_file": ("config.yaml", cfg or config())}
        return httpx.post(f"{self.url}/api/submit", params={"wait": str(wait).lower()}, files=files, timeout=timeout)

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, timeout=30)

    def cancel(self, job_id: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"{self.url}/api/cancel/{job_id}", headers=headers, timeout=30)

    def wait_until(self, job_id: str, statuses: set[str], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/api/status/{job_id}").json()
            if status["status"] in statuses:
                return status
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} still {status['status']} after {timeout} s")

    def pid_file(self, user_slug: str, job_id: str) -> Path:
        return self.results_dir / "work" / user_slug / job_id / "pid"

    def wait_for_pid(self, user_slug: str, job_id: str, timeout: float = 180) -> int:
        """The grading command's pid, once it started."""
        path = self.pid_file(user_slug, job_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text():
                return int(path.read_text())
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} never started its grading command")


def process_gone(pid: int, timeout: float = 15) -> bool:
    """True once `pid` no longer runs (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False
