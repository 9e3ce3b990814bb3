"""Quarantine of sick policy servers: the policy, pure (no Prefect).

How long a server that refused a connection stays closed (`Backoff`: 5 s, doubling to 2 min,
resumed when it relapses within 10 min), what is stored per server (`QuarantineRecord`), which
servers one episode run avoids (`ServerFaults`), and the lines people read (`quarantine_note`,
`pool_warnings`). The Prefect side (closing the limit, the record's variable, probes) is
`flows/slots/quarantine.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from pydantic import BaseModel

from flows.evaluators.base import ServerUnavailable
from generate.models import Resources

MAX_FAULTS_PER_RUN = 3
"""An episode run tries this many failing servers; then it fails (an attempt is charged)."""


class NoLiveServer(ServerUnavailable):
    """Every server an episode may use stayed quarantined for as long as it was told to wait."""


class QuarantineRecord(BaseModel):
    """One server's quarantine, as stored in its Prefect Variable (times: epoch seconds)."""

    address: str
    failures: int = 1
    """Failed connections and probes in a row: the back-off grows with them."""
    since: float
    """When this spell began."""
    until: float | None
    """No probe before this; None once lifted."""
    reason: str = ""
    lifted_at: float | None = None

    @property
    def active(self) -> bool:
        return self.until is not None

    def probe_due(self, now: float) -> bool:
        return self.until is not None and now >= self.until


@dataclass(frozen=True)
class Backoff:
    first: float = 5.0
    factor: float = 2.0
    cap: float = 120.0
    memory: float = 600.0
    """A server that fails again within this long of its recovery resumes its back-off."""

    def delay(self, failures: int) -> float:
        return min(self.first * self.factor ** max(0, failures - 1), self.cap)

    def enter(self, record: QuarantineRecord | None, address: str, reason: str, now: float) -> QuarantineRecord:
        """A connection failed: quarantine (a server already quarantined stays as it is)."""
        if record is not None and record.active:
            return record
        relapse = record is not None and record.lifted_at is not None and now - record.lifted_at < self.memory
        failures = record.failures + 1 if relapse else 1
        return QuarantineRecord(address=address, failures=failures, since=now, until=now + self.delay(failures), reason=reason)

    def probe_failed(self, record: QuarantineRecord, reason: str, now: float) -> QuarantineRecord:
        failures = record.failures + 1
        return record.model_copy(update={"failures": failures, "until": now + self.delay(failures), "reason": reason})

    def lifted(self, record: QuarantineRecord, now: float) -> QuarantineRecord:
        return record.model_copy(update={"until": None, "lifted_at": now})


BACKOFF = Backoff()


@dataclass
class ServerFaults:
    """The servers that failed one episode run: it goes elsewhere first, at most `most` times."""

    most: int = MAX_FAULTS_PER_RUN
    failed: list[str] = field(default_factory=list)

    def add(self, address: str) -> bool:
        """Count a failure; whether the run may try again."""
        self.failed.append(address)
        return len(self.failed) < self.most

    def excluded(self, candidates: Iterable[str]) -> set[str]:
        """The failed servers among `candidates`, unless that is all of them: then the run
        waits for them (their quarantine lifts when a probe succeeds)."""
        candidates = set(candidates)
        bad = candidates & set(self.failed)
        return bad if bad != candidates else set()


def quarantine_note(record: QuarantineRecord, now: float) -> str:
    """`quarantined 2 min (3 failures; probe in 8 s): cannot connect ...` (`quarantined: limit at 0`
    for a server at 0 without a record, `flows/pool_status.py`)."""
    if not record.until:
        return f"quarantined: {record.reason}"
    minutes = (now - record.since) / 60
    age = f"{minutes:.0f} min" if minutes >= 1 else f"{now - record.since:.0f} s"
    probe = "probe due" if record.probe_due(now) else f"probe in {record.until - now:.0f} s"
    failures = f"{record.failures} failure{'s' if record.failures != 1 else ''}"
    return f"quarantined {age} ({failures}; {probe}): {record.reason}"


def pool_warnings(resources: Resources, quarantined: dict[str, QuarantineRecord | None], now: float) -> list[str]:
    """One line per pool with quarantined servers; `quarantined`: address -> record (None: unknown)."""
    lines = []
    for pool in resources.pools:
        addresses = [server.address for server in resources.servers(pool)]
        sick = [address for address in addresses if address in quarantined]
        if not sick:
            continue
        notes = [f"{a} {quarantine_note(quarantined[a], now)}" if quarantined[a] else f"{a} quarantined" for a in sick]
        head = f"pool {pool}: all {len(addresses)} servers quarantined, its episodes wait" if len(sick) == len(addresses) \
            else f"pool {pool}: {len(sick)}/{len(addresses)} servers quarantined"
        lines.append(f"{head} ({'; '.join(notes)})")
    return lines
