"""`evalq logs`: the entries of a log since some time ago, as JSON records."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from generate.errors import InputError

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_since(text: str) -> timedelta:
    """`3d`, `12h`, `30m`, `45s`, `2w` as a timedelta; `InputError` naming `--since` otherwise."""
    match = DURATION.match(text)
    if not match:
        raise InputError(None, f"--since {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 3d")
    return timedelta(**{UNITS[match.group(2)]: float(match.group(1))})


def entries_filter(project: str, log_name: str, since: timedelta, extra: str | None, now: datetime) -> str:
    """The Cloud Logging filter: this log, since `now - since`, and the user's own filter."""
    start = (now - since).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    parts = [f'logName="projects/{project}/logs/{log_name}"', f'timestamp>="{start}"']
    if extra:
        parts.append(f"({extra})")
    return " AND ".join(parts)


def entry_record(entry) -> dict:
    """One entry as plain JSON: time, severity, labels and its text or JSON payload."""
    return {
        "timestamp": entry.timestamp.isoformat() if entry.timestamp else None,
        "severity": entry.severity or "DEFAULT",
        "log": entry.log_name,
        "labels": dict(entry.labels or {}),
        "payload": entry.payload,
    }


def read_entries(client, log_name: str, since: timedelta, extra: str | None) -> list[dict]:
    """The entries of `log_name` newer than `since`, oldest first."""
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud.logging import ASCENDING

    query = entries_filter(client.project, log_name, since, extra, datetime.now(timezone.utc))
    try:
        return [entry_record(entry) for entry in client.list_entries(filter_=query, order_by=ASCENDING)]
    except GoogleAPICallError as exc:
        raise InputError(None, f"reading log {log_name}: {exc.message or exc}") from None
