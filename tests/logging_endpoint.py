"""A small Cloud Logging API on loopback for the tests: `POST /v2/entries:write` stores entries
in memory, `POST /v2/entries:list` returns them, filtered.

The filter support covers what evalq sends and the tests use: `AND`-joined comparisons
(`=`, `!=`, `>=`, `<=`, `>`, `<`) of `logName`, `timestamp`, `severity` (by rank), `labels.KEY`
(or `labels."KEY"`) and `textPayload` with quoted values; a clause may be a parenthesized
`OR` of comparisons. Each request is recorded, so tests can count writes.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"]
COMPARISON = re.compile(r'^\s*([\w.]+|labels\."[^"]+")\s*(>=|<=|!=|=|>|<)\s*"([^"]*)"\s*$')


def normalized(entry: dict) -> dict:
    """As the API stores it: a numeric severity (the handler sends 400 for WARNING) by name."""
    if isinstance(entry.get("severity"), int):
        entry["severity"] = SEVERITIES[entry["severity"] // 100]
    return entry


def field_value(entry: dict, field: str):
    if field.startswith("labels."):
        return (entry.get("labels") or {}).get(field.removeprefix("labels.").strip('"'))
    value = entry.get(field)
    if field == "severity":
        return SEVERITIES.index(value or "DEFAULT")
    if field == "timestamp":
        return parse_time(value)
    return value


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def matches(entry: dict, query: str) -> bool:
    for clause in query.split(" AND "):
        alternatives = clause.strip().removeprefix("(").removesuffix(")").split(" OR ")
        if not any(compares(entry, alternative) for alternative in alternatives):
            return False
    return True


def compares(entry: dict, comparison: str) -> bool:
    match = COMPARISON.match(comparison)
    if not match:
        raise ValueError(f"unsupported filter clause {comparison!r}")
    field, op, raw = match.groups()
    actual = field_value(entry, field)
    wanted = SEVERITIES.index(raw) if field == "severity" else parse_time(raw) if field == "timestamp" else raw
    if actual is None:
        return op == "!="
    return {"=": actual == wanted, "!=": actual != wanted, ">=": actual >= wanted, "<=": actual <= wanted,
            ">": actual > wanted, "<": actual < wanted}[op]


class LoggingEndpoint:
    """Start with `with LoggingEndpoint() as endpoint:`; `endpoint.url` for EVALQ_LOGGING_ENDPOINT."""

    def __init__(self):
        self.entries: list[dict] = []
        self.writes: list[int] = []  # entries per entries:write call
        self.filters: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def handler_class(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.startswith("/v2/entries:write"):
                    self.reply(200, endpoint.write(body))
                elif self.path.startswith("/v2/entries:list"):
                    self.reply(200, endpoint.list(body))
                else:
                    self.reply(404, {"error": {"code": 404, "message": f"no route {self.path}"}})

            def reply(self, status: int, document: dict):
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def write(self, body: dict) -> dict:
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        defaults = {key: body[key] for key in ("logName", "resource", "labels") if key in body}
        entries = [normalized({**defaults, "timestamp": now, **entry}) for entry in body.get("entries", [])]
        with self.lock:
            self.entries.extend(entries)
            self.writes.append(len(entries))
        return {}

    def list(self, body: dict) -> dict:
        query = body.get("filter", "")
        with self.lock:
            self.filters.append(query)
            found = [entry for entry in self.entries if not query or matches(entry, query)]
        return {"entries": sorted(found, key=lambda entry: entry["timestamp"])}

    def texts(self) -> list[str]:
        with self.lock:
            return [entry.get("textPayload") for entry in self.entries]

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
