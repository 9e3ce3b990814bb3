"""The Cloud Logging severity a log line carries, if any (pure).

Recognised: Prefect's console format (`12:00:01.123 | WARNING | prefect.flow_runs - ...`),
Python's default (`ERROR:root:...`), `... - name - ERROR - ...`, `[ERROR]`, and lines that
start with a level (`INFO:     127.0.0.1 ...` from uvicorn). Levels are upper case only, so
a message mentioning "error" is not mistaken for one.
"""

from __future__ import annotations

import re

DEFAULT = "DEFAULT"
ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "ERR": "ERROR", "CRIT": "CRITICAL"}
LEVEL = r"(DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|ERR|CRITICAL|CRIT|FATAL|ALERT|EMERGENCY)"
PATTERNS = [
    re.compile(rf"\|\s*{LEVEL}\s*\|"),  # Prefect: `time | LEVEL   | logger - message`
    re.compile(rf"^{LEVEL}(?::|\s)"),  # Python's `LEVEL:logger:message`, uvicorn's `LEVEL:  `
    re.compile(rf"\[{LEVEL}\]"),  # `[LEVEL]`
    re.compile(rf"\s-\s{LEVEL}\s-\s"),  # `time - logger - LEVEL - message`
]
HEAD = 120
"""Only a line's first characters hold its level; the message after them may say anything."""


def parse_severity(line: str) -> str:
    """The severity named at the head of `line`, or `DEFAULT` when it names none."""
    head = line[:HEAD]
    found = [match for pattern in PATTERNS if (match := pattern.search(head))]
    if not found:
        return DEFAULT
    level = min(found, key=lambda match: match.start()).group(1)
    return ALIASES.get(level, level)
