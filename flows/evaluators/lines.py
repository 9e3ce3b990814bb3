"""Reading a program's output line by line, whatever its lines' length.

asyncio's `readline` fails on a line longer than the stream's limit (64 KiB by default): a
progress bar or a JSON blob without a newline would end the reader, and with it the episode or
pipeline. `next_line` returns such a line in pieces of at most `LINE_LIMIT` bytes instead,
nothing dropped. Start the program with `limit=LINE_LIMIT`.
"""

from __future__ import annotations

import asyncio

LINE_LIMIT = 1 << 20
"""Longest output line read whole (longer ones are read in pieces)."""


async def next_line(stream: asyncio.StreamReader) -> bytes | None:
    """The next line with its newline (the last one may lack it), or its next piece when it is
    over the stream's limit; None at the end of the stream."""
    try:
        raw = await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as end:  # the last line, without its newline (or nothing)
        raw = end.partial
    except asyncio.LimitOverrunError as long_line:  # over the limit: its first piece
        raw = await stream.read(long_line.consumed)
    return raw or None
