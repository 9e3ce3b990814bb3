"""Keep secrets out of what an evaluator's output becomes: log lines and failure messages.

An evaluator program prints what it likes; its lines go to the episode's log and its last
stderr line into the failure's message (Prefect's UI, `evalq campaign report`, `failed.txt`
readers). Before either, `redact` masks what looks like a credential: the value of every
environment variable whose name says it holds one (`*TOKEN*`, `*SECRET*`, `*PASSWORD*`,
`*KEY*`, `*AUTH*`, `*CREDENTIAL*`), a URL's `user:password@`, and `token=...`,
`password: ...`, `Authorization: Bearer ...` pairs. Pure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
LINE_CHARS = 200
"""At most this much of a line reaches a state message."""
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|AUTH|CREDENTIAL", re.IGNORECASE)
SHORTEST_SECRET = 6
"""Shorter values (`1`, `true`) are not masked: they would mask half of every line."""
# Every repeat is bounded: an unbounded one is tried again from each position of a long line
# (a megabyte without a newline took minutes); no scheme, name or password is longer.
URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]{0,31}://)[^\s/@:]{1,256}:[^\s/@]{1,1024}@", re.IGNORECASE)
SECRET_PAIR = re.compile(
    r"(?P<key>\b[\w.-]{0,64}(?:token|secret|password|passwd|api[_-]?key|auth(?:orization)?)[\w.-]{0,64}\b\s{0,8}[=:]\s{0,8})"
    r"(?:(?P<scheme>bearer|basic|token)\s+)?(?P<value>[^\s,;&\"']+)",
    re.IGNORECASE,
)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the variables whose names say they hold a secret, longest first."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if SECRET_NAME.search(name) and len(value) >= SHORTEST_SECRET}
    return sorted(values, key=len, reverse=True)


def redact(line: str, secrets: list[str] | None = None) -> str:
    """`line` with every secret masked (`secrets`: the values to mask, default this process's)."""
    for value in secret_values() if secrets is None else secrets:
        line = line.replace(value, MASK)
    line = URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", line)
    return SECRET_PAIR.sub(lambda m: f"{m['key']}{m['scheme'] + ' ' if m['scheme'] else ''}{MASK}", line)


def bounded(line: str, most: int = LINE_CHARS) -> str:
    """`line` cut to `most` characters (an ellipsis says it was cut)."""
    line = line.strip()
    return line if len(line) <= most else line[:most - 1] + "…"
