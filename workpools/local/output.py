"""A job's stdout/stderr files: the command writes them directly; this module reads them back.

The job tails them into its flow run's logs while the command runs; `evalq queue output`
prints them (and follows them with `--follow`).
"""

from __future__ import annotations

from pathlib import Path

MAX_LINE_CHARS = 4000
MAX_LOGGED_LINES = 10_000
"""Per stream and job: past this the rest stays in the file only (the log API is not a disk)."""


class Tail:
    """New bytes of a growing file, from where the last read stopped."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.offset = 0

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data


class LineTail:
    """Complete lines of a growing file, as text; a progress bar's `\\r` keeps its last update."""

    def __init__(self, path: Path | str):
        self.tail = Tail(path)
        self.partial = b""

    def lines(self, final: bool = False) -> list[str]:
        """Lines completed since the last call; with `final`, also an unterminated last line."""
        data = self.partial + self.tail.read()
        *complete, self.partial = data.split(b"\n")
        if final and self.partial:
            complete.append(self.partial)
            self.partial = b""
        return [clean_line(line) for line in complete]


def clean_line(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    text = text.rsplit("\r", 1)[-1]
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + " [...]"


class LogForwarder:
    """Sends a job's new output lines to a logger (`[stderr]` marks the error stream)."""

    def __init__(self, logger, stdout: Path | str | None, stderr: Path | str | None):
        self.logger = logger
        self.streams = [(LineTail(path), prefix) for path, prefix in ((stdout, ""), (stderr, "[stderr] ")) if path]
        self.logged = {prefix: 0 for _, prefix in self.streams}

    def forward(self, final: bool = False) -> None:
        for tail, prefix in self.streams:
            for line in tail.lines(final):
                self.logged[prefix] += 1
                if self.logged[prefix] <= MAX_LOGGED_LINES:
                    self.logger.info("%s%s", prefix, line)
                elif self.logged[prefix] == MAX_LOGGED_LINES + 1:
                    self.logger.info("%s... more output only in %s", prefix, tail.tail.path)
