"""This process's view of the Prefect API: away or answering, said once each way.

An outage of the API (a restarted or unreachable server) is waited out for up to
`OUTAGE_BUDGET_SECONDS` (`flows/runtime/api_retry.py`): episodes play on, the campaign and the
runners wait. While they wait, every caller of `retrying` reports here, and the process logs
one WARNING when the API goes away and one INFO when it is back (logger `evalq.api`), not a
line per call. `outages` keeps when it was away, so the prefetch tuner can leave that time out
of its load-time samples. Prefect's own background services report here too
(`flows/runtime/outages.py`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import httpx

OUTAGE_BUDGET_SECONDS = 300.0
"""How long an API outage is waited out (the server's restart included): episodes keep their
slots (their leases outlast it, `flows/slots/leaser.py`), their state changes wait for the API,
and live runs are not taken for dead (`flows/runtime/zombies.py`). Beyond it, calls give up."""
AWAY_AFTER_SECONDS = 2.0
"""A call failing this long (a 503 storm, timeouts) means the API is away; a refused connection
means it at once."""
AWAY_MESSAGE = "Prefect API unreachable"
BACK_MESSAGE = "Prefect API back"

logger = logging.getLogger("evalq.api")
logger.setLevel(logging.INFO)


class ApiHealth:
    """Whether the API answers, as this process's calls found it (thread-safe: a runner calls
    from its worker loop and from its runs' loop)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.away_since: float | None = None
        """When the first failing call of the current outage started; None while the API answers."""
        self._declared_at = 0.0
        self._gave_up = False
        self.outages: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)
        """(began, ended) of past outages, on this process's monotonic clock."""

    def failed(self, exc: BaseException, since: float) -> None:
        """A call has failed transiently since `since`: the API is away if the connection was
        refused or the failures have lasted `AWAY_AFTER_SECONDS`."""
        if self.away_since is None and (isinstance(exc, httpx.ConnectError) or self._clock() - since >= AWAY_AFTER_SECONDS):
            self.away(f"{type(exc).__name__}: {exc}", since)

    def away(self, reason: str, since: float) -> None:
        """The API is away since `since`; the first report of an outage is logged."""
        with self._lock:
            if self.away_since is not None:
                return
            self.away_since, self._declared_at, self._gave_up = since, self._clock(), False
        logger.warning("%s (%s): waiting up to %s for it; runs in flight play on",
                       AWAY_MESSAGE, reason, minutes(OUTAGE_BUDGET_SECONDS))

    def answered(self, started: float) -> None:
        """A call sent at `started` was answered: if it left after the outage was declared, the
        API is back (a call on its way before then may have been answered by a server going down)."""
        if self.away_since is None:
            return
        with self._lock:
            if self.away_since is None or started < self._declared_at:
                return
            began, ended = self.away_since, self._clock()
            self.away_since = None
            self.outages.append((began, ended))
        logger.info("%s after %.0f s", BACK_MESSAGE, ended - began)

    def outage_began(self, since: float) -> float:
        """When the outage a call failing since `since` is part of began."""
        away = self.away_since
        return since if away is None else min(away, since)

    def gave_up(self, exc: BaseException) -> None:
        """A call gave up at the end of the budget: said once per outage."""
        with self._lock:
            if self._gave_up:
                return
            self._gave_up = True
        logger.error("%s for more than %s (%s: %s): calls give up; episodes in flight fail and are "
                     "requeued once it is back", AWAY_MESSAGE, minutes(OUTAGE_BUDGET_SECONDS), type(exc).__name__, exc)

    def unavailable_within(self, since: float, until: float) -> float:
        """Seconds of [since, until] during which the API was away."""
        spans = list(self.outages)
        if self.away_since is not None:
            spans.append((self.away_since, until))
        return sum(max(0.0, min(end, until) - max(began, since)) for began, end in spans)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


API_HEALTH = ApiHealth()
"""This process's one view of the API."""
