"""`evalq stream-logs`: every line of stdin becomes an entry of a Cloud Logging log.

Lines are echoed to stdout as they arrive (the pipe still shows them) and buffered; a ticker
thread writes the buffer as one `entries:write` call every `interval` seconds, and whatever is
left is written at EOF, on Ctrl-C or on SIGTERM: nothing that was read is lost. A failed write
keeps its entries for the next one.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable, TextIO

from flows.cloudlogging.client import global_resource
from flows.cloudlogging.severity import parse_severity

MAX_BATCH = 1000
"""Entries per write; a full buffer is written at once rather than waiting for the ticker."""


class LineBatcher:
    """Buffers lines as entries and writes them in batches, from any thread."""

    def __init__(self, client, log_name: str):
        self.logger = client.logger(log_name, resource=global_resource(client.project))
        self.pending: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.error: Exception | None = None

    def add(self, line: str) -> None:
        with self.lock:
            self.pending.append((line, parse_severity(line)))
            full = len(self.pending) >= MAX_BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the buffered entries; on failure put them back in front and remember the error."""
        with self.write_lock:
            with self.lock:
                entries, self.pending = self.pending, []
            if not entries:
                return
            batch = self.logger.batch()
            for text, severity in entries:
                batch.log_text(text, severity=severity)
            try:
                batch.commit()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - network or API: retried at the next flush
                self.error = exc
                with self.lock:
                    self.pending = entries + self.pending


class Ticker(threading.Thread):
    """Calls `action` every `interval` seconds until stopped."""

    def __init__(self, interval: float, action: Callable[[], None]):
        super().__init__(daemon=True, name="stream-logs-ticker")
        self.interval, self.action, self.stopped = interval, action, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.action()


def echoed(echo: TextIO, line: str) -> TextIO | None:
    """Write `line` to `echo`; None once the reader went away (`| head`): logging goes on."""
    try:
        echo.write(line)
        echo.flush()
        return echo
    except BrokenPipeError:
        return None


def stream_lines(source: TextIO, echo: TextIO | None, batcher: LineBatcher, interval: float) -> bool:
    """Copy `source` to `echo` and the log until EOF or interrupt; True when interrupted."""
    ticker = Ticker(interval, batcher.flush)
    ticker.start()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    interrupted = False
    try:
        for line in iter(source.readline, ""):
            batcher.add(line.rstrip("\r\n"))
            if echo is not None:
                echo = echoed(echo, line)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        ticker.stopped.set()
        ticker.join()
        batcher.flush()
    return interrupted


def stream_stdin(client, log_name: str, interval: float) -> int:
    """The command's exit status: 0 at EOF, 130 after Ctrl-C, 1 when entries could not be written."""
    import os

    batcher = LineBatcher(client, log_name)
    interrupted = stream_lines(sys.stdin, sys.stdout, batcher, interval)
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # keep Python from complaining at exit about the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if batcher.error is not None:
        print(f"error: {len(batcher.pending)} log entries not written to {log_name}: {batcher.error}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0
