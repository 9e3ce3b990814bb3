"""`command:<argv template>`: an external evaluator program.

The template is split like a shell would (it is the organizer's, not user data) and each
argument is filled in with `{job_id} {team_slug} {team} {task} {instance_id}
{instance_path} {metrics_path} {video_path}` and, when present, `{host} {port} {url}`.
No shell runs. A program given `{video_path}` may write the episode's video (MP4) there;
it is moved beside the metrics once the episode succeeds (`flows/results/videos.py`).

Protocol (line based, UTF-8):
1. If the template names no server (`{host}`, `{port}`, `{url}`), the program starts during
   `prepare`, loads its simulator, then prints a line `READY` on stdout. It then reads one
   JSON line on stdin: `{"host": ..., "port": ..., "url": "ws://host:port"}`.
   If the template does name the server, the program starts once a server is leased
   and no READY line is expected.
2. It runs the episode and writes its metrics as a JSON object to `{metrics_path}`
   (or prints one line `METRICS {...}` on stdout), then exits 0.
   The episode's `timeout_seconds` bounds this step: when it runs out the program is killed.
3. Exit code 75 (EX_TEMPFAIL) means the policy server was unreachable: the episode is
   retried. Any other non-zero exit code is a broken evaluator: not retried. The failure's
   message carries the program's last stderr line next to its exit code (cut to 200
   characters, secrets masked: `flows/evaluators/redact.py`).
Other stdout/stderr lines go to the episode's log (secrets masked too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import tempfile
from pathlib import Path

from flows.evaluators.base import EvaluationError, Metrics, ServerUnavailable
from flows.evaluators.lines import LINE_LIMIT, Lines
from flows.evaluators.redact import bounded, redact, secret_values
from generate.models import Job, Server

MAX_METRICS_BYTES = 16 << 20
"""Longest `METRICS {...}` line taken (longer metrics go to `{metrics_path}`)."""

EX_TEMPFAIL = 75
SERVER_FIELDS = ("{host}", "{port}", "{url}")
VIDEO_FIELD = "{video_path}"


def fill(template: list[str], values: dict[str, str]) -> list[str]:
    """Fill `{name}` placeholders argument by argument; unknown names are an error."""
    try:
        return [arg.format_map(values) for arg in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise EvaluationError(f"command template: unknown or malformed placeholder {exc}") from None


class CommandEvaluator:
    def __init__(self, argv: str, ready_timeout: float = 600.0, logger=None):
        self.template = shlex.split(argv)
        if not self.template:
            raise EvaluationError("command evaluator: empty command")
        self.ready_timeout = float(ready_timeout)
        self.logger = logger or logging.getLogger("evalq.command")
        self.needs_server_in_argv = any(field in arg for arg in self.template for field in SERVER_FIELDS)
        if any(VIDEO_FIELD in arg for arg in self.template):
            self.video_path: Path | None = None
            """Set by the episode before `prepare`: only templates that name `{video_path}` ask for one."""
        self.process: asyncio.subprocess.Process | None = None
        descriptor, path = tempfile.mkstemp(prefix="evalq-metrics-", suffix=".json")
        os.close(descriptor)  # the program writes the file by name: keep no descriptor per episode
        self.metrics_file = Path(path)
        self.metrics_line: str | None = None
        self.metrics_too_long = False
        self._pump: asyncio.Task | None = None
        self._stderr_pump: asyncio.Task | None = None
        self.last_stderr = ""
        """The program's last non-blank stderr line, secrets masked."""
        self.secrets = secret_values()

    def _values(self, job: Job, server: Server | None) -> dict[str, str]:
        payload = job.payload
        values = {
            "job_id": job.id,
            "team": payload.team,
            "team_slug": payload.team_slug,
            "task": payload.task,
            "instance_id": str(payload.instance_id),
            "instance_path": payload.instance_path,
            "metrics_path": str(self.metrics_file),
            "video_path": str(getattr(self, "video_path", None) or ""),
        }
        if server is not None:
            values.update(host=server.host, port=str(server.port), url=server.url)
        return values

    async def _start(self, argv: list[str]) -> None:
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
            )
        except OSError as exc:
            raise EvaluationError(f"cannot start evaluator {argv[0]!r}: {exc.strerror}") from None
        self._stdout, self._stderr = Lines(self.process.stdout), Lines(self.process.stderr)
        self._stderr_pump = asyncio.create_task(self._forward_stderr())

    async def _read_line(self, lines: Lines | None = None) -> str | None:
        """The next line of stdout (or `lines`; a piece of one over `LINE_LIMIT`), None at the end."""
        raw = await (lines or self._stdout).next()
        return raw.decode("utf-8", "replace").rstrip("\n") if raw is not None else None

    def _log(self, line: str) -> None:
        self.logger.info("[evaluator] %s", redact(line, self.secrets))

    async def _forward_output(self) -> None:
        """Log the program's lines; keep a `METRICS {...}` line if it prints one."""
        while (line := await self._read_line()) is not None:
            if line.startswith("METRICS "):  # never logged: a line over LINE_LIMIT is joined again
                rest, whole = await self._stdout.rest(MAX_METRICS_BYTES)
                self.metrics_line = line[len("METRICS "):] + rest.decode("utf-8", "replace").rstrip("\n") if whole else None
                self.metrics_too_long = not whole
            else:
                self._log(line)

    async def _forward_stderr(self) -> None:
        """Log the program's stderr lines and keep the last one for a failure's message."""
        while (line := await self._read_line(self._stderr)) is not None:
            self._log(line)
            if line.strip():
                self.last_stderr = bounded(redact(line, self.secrets))

    async def _exit_reason(self, code: int) -> str:
        """`evaluator exited with code 3: <its last stderr line>`, once its stderr is read."""
        if self._stderr_pump is not None:
            await self._stderr_pump
        said = f": {self.last_stderr}" if self.last_stderr else ""
        return f"evaluator exited with code {code}{said}"

    async def prepare(self, job: Job) -> None:
        if self.needs_server_in_argv:
            return
        await self._start(fill(self.template, self._values(job, None)))
        try:
            await asyncio.wait_for(self._wait_ready(), self.ready_timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise EvaluationError(f"evaluator printed no READY line in {self.ready_timeout:.0f} s") from None

    async def _wait_ready(self) -> None:
        while (line := await self._read_line()) is not None:
            if line.strip() == "READY":
                return
            self._log(line)
        code = await self.process.wait()
        reason = await self._exit_reason(code)
        raise EvaluationError(reason.replace(f"code {code}", f"code {code} before READY", 1))

    async def run(self, job: Job, server: Server) -> Metrics:
        if self.needs_server_in_argv:
            await self._start(fill(self.template, self._values(job, server)))
        else:
            line = json.dumps({"host": server.host, "port": server.port, "url": server.url}) + "\n"
            self.process.stdin.write(line.encode())
            await self.process.stdin.drain()
        self._pump = asyncio.create_task(self._forward_output())
        try:  # the episode's `timeout_seconds` bounds this: one timer, the episode's
            code = await self.process.wait()
            await self._pump
        except asyncio.CancelledError:
            await self.kill()
            raise
        if code == EX_TEMPFAIL:
            raise ServerUnavailable(server, "evaluator exited 75 (policy server unreachable)")
        if code != 0:
            raise EvaluationError(await self._exit_reason(code))
        if self._stderr_pump is not None:
            await self._stderr_pump
        return self._metrics()

    def _metrics(self) -> Metrics:
        text = self.metrics_file.read_text(encoding="utf-8").strip() or self.metrics_line or ""
        self.metrics_file.unlink(missing_ok=True)
        try:
            metrics = json.loads(text)
        except json.JSONDecodeError:
            if self.metrics_too_long:
                raise EvaluationError(f"evaluator's METRICS line is over {MAX_METRICS_BYTES >> 20} MiB: "
                                      "write the metrics to {metrics_path} instead") from None
            raise EvaluationError("evaluator wrote no metrics (JSON object) to {metrics_path} or a METRICS line") from None
        if not isinstance(metrics, dict):
            raise EvaluationError("evaluator metrics are not a JSON object")
        return metrics

    async def kill(self) -> None:
        """Stop the program if it still runs (cancellation, timeout)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._stderr_pump is not None and not self._stderr_pump.done():
            self._stderr_pump.cancel()
        self.metrics_file.unlink(missing_ok=True)
