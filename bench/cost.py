"""What an episode costs the system: API calls (from the server's access log) and CPU-seconds.

`api_calls(log_text)` counts the requests in a Prefect server log written with
`PREFECT_SERVER_LOGGING_LEVEL=INFO` (uvicorn's access lines), grouped by method and route,
ids folded to `{id}`. `group_cpu_seconds(pgid)` sums user+system CPU of a process group
(the embedded server and the worker are each started in a session of their own), including
children that already exited and were waited for.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path

ACCESS = re.compile(r'(?:uvicorn\.access - |INFO: +)[\d.:]+ - "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')
"""uvicorn's access line, in Prefect's log format or in uvicorn's own (a server that skips loading
Prefect's collections at start keeps uvicorn's)."""
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LIMIT_NAME = re.compile(r"/name/[^/?]+")
EVALQ_LIMIT = re.compile(r"(?<=/concurrency_limits/)evalq:[^/?]+")
"""A limit read by its name in the path (`GET /v2/concurrency_limits/evalq:server:host:port`)."""


def route(method: str, path: str) -> str:
    path = UUID.sub("{id}", path.split("?", 1)[0])
    return f"{method} {EVALQ_LIMIT.sub('{name}', LIMIT_NAME.sub('/name/{name}', path))}"


def api_calls(log_text: str) -> Counter:
    calls: Counter = Counter()
    for match in ACCESS.finditer(log_text):
        calls[route(match["method"], match["path"])] += 1
    return calls


def processes() -> list[tuple[int, int, int, float]]:
    """(pid, ppid, pgid, CPU-seconds) of every process: own CPU plus its waited-for children's."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                line = stat.read()
        except OSError:
            continue
        fields = line[line.rindex(")") + 2:].split()
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        found.append((int(entry), int(fields[1]), int(fields[2]), ticks / os.sysconf("SC_CLK_TCK")))
    return found


def group_cpu_seconds(pgid: int) -> float:
    return sum(seconds for _, _, group, seconds in processes() if group == pgid)


def children_cpu_seconds(parent: int) -> float:
    """CPU-seconds of `parent` and its direct children (a PostgreSQL postmaster and its backends)."""
    return sum(seconds for pid, ppid, _, seconds in processes() if parent in (pid, ppid))


def write_result(kind: str, result: dict) -> Path:
    """Print `result` and write it to bench/results/<kind>-<time>.json."""
    out = Path(__file__).resolve().parent / "results" / time.strftime(f"{kind}-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result)) + 2
    for key, value in result.items():
        print(f"{key:{width}} {value}")
    print(f"written to {out}")
    return out
