"""Reading a program's output line by line, whatever its lines' length.

asyncio's `readline` fails on a line longer than the stream's limit (64 KiB by default): a
progress bar or a JSON blob without a newline would end the reader, and with it the episode or
pipeline. `Lines` returns such a line in pieces of at most `LINE_LIMIT` bytes instead, nothing
dropped (a `METRICS` line that long is not whole JSON, and fails as such). The limit keeps a
logged piece under Prefect's 1,000,000-byte log size even when every byte decodes as U+FFFD.
Start the program with `limit=LINE_LIMIT`.
"""

from __future__ import annotations

import asyncio

LINE_LIMIT = 256 << 10
"""Longest output line read whole (longer ones are read in pieces of this size)."""


class Lines:
    """One output stream of a program, a line (or a long line's piece) at a time."""

    def __init__(self, stream: asyncio.StreamReader):
        self.stream = stream
        self.in_long_line = False
        """The last piece returned was part of a line over the limit."""

    async def next(self) -> bytes | None:
        """The next line with its newline (the last one may lack it), or the next piece of a line
        over the limit; None at the end of the stream."""
        while True:
            raw, continued = await self._piece()
            if raw == b"\n" and continued:
                continue  # the newline of a long line whose last piece ended right before it
            return raw or None

    async def rest(self, cap: int) -> tuple[bytes, bool]:
        """After a piece of a long line: the rest of that line, and whether the whole line fit in
        `cap` bytes (else what is past it is read and dropped)."""
        parts, size = [], 0
        while self.in_long_line:
            raw, _ = await self._piece()
            if not raw:
                break
            size += len(raw)
            if size <= cap:
                parts.append(raw)
        return b"".join(parts), size <= cap

    async def _piece(self) -> tuple[bytes, bool]:
        """The next line or piece of one, and whether the piece before it was part of a long line."""
        continued = self.in_long_line
        try:
            raw = await self.stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:  # the last line, without its newline (or nothing)
            raw = end.partial
        except asyncio.LimitOverrunError as long_line:  # over the limit: its next piece
            self.in_long_line = True
            return await self.stream.readexactly(min(long_line.consumed, LINE_LIMIT)), continued
        self.in_long_line = False
        return raw, continued
