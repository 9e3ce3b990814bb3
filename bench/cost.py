"""What an episode costs the system: API calls (from the server's access log) and CPU-seconds.

`api_calls(log_text)` counts the requests in a Prefect server log written with
`PREFECT_SERVER_LOGGING_LEVEL=INFO` (uvicorn's access lines), grouped by method and route,
ids folded to `{id}`. `group_cpu_seconds(pgid)` sums user+system CPU of a process group
(the embedded server and the worker are each started in a session of their own), including
children that already exited and were waited for.
"""

from __future__ import annotations

import os
import re
from collections import Counter

ACCESS = re.compile(r'uvicorn\.access - [\d.:]+ - "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LIMIT_NAME = re.compile(r"/name/[^/?]+")


def route(method: str, path: str) -> str:
    path = UUID.sub("{id}", path.split("?", 1)[0])
    return f"{method} {LIMIT_NAME.sub('/name/{name}', path)}"


def api_calls(log_text: str) -> Counter:
    calls: Counter = Counter()
    for match in ACCESS.finditer(log_text):
        calls[route(match["method"], match["path"])] += 1
    return calls


def _cpu_of(stat: str) -> tuple[int, float]:
    """(pgid, seconds) from a /proc/<pid>/stat line: own CPU plus waited-for children's."""
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return int(fields[2]), ticks / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                group, seconds = _cpu_of(stat.read())
        except OSError:
            continue
        if group == pgid:
            total += seconds
    return total


def children_cpu_seconds(parent: int) -> float:
    """CPU-seconds of `parent` and its direct children (a PostgreSQL postmaster and its backends)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                line = stat.read()
        except OSError:
            continue
        ppid = int(line[line.rindex(")") + 2:].split()[1])
        if int(entry) == parent or ppid == parent:
            total += _cpu_of(line)[1]
    return total
