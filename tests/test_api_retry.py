"""The one rule for waiting out the Prefect API (`flows/runtime/api_retry.py`), its report
(`flows/runtime/api_health.py`) and what it does to Prefect's events worker's complaints
(`flows/runtime/outages.py`): fast, with scripted failures and a scripted clock.
tests/test_api_outage.py restarts a real server mid-campaign."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

import flows.runtime.api_retry as api_retry
from flows.runtime.api_health import AWAY_MESSAGE, BACK_MESSAGE, OUTAGE_BUDGET_SECONDS, ApiHealth
from flows.runtime.api_retry import MAX_DELAY_SECONDS, delay, retrying
from flows.runtime.outages import OutageNoise

REQUEST = httpx.Request("GET", "http://api/health")


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("All connection attempts failed", request=REQUEST)


def status(code: int) -> httpx.HTTPStatusError:
    return httpx.HTTPStatusError("scripted", request=REQUEST, response=httpx.Response(code, request=REQUEST))


class Script:
    """A call that raises its scripted errors in turn, then answers."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


@pytest.fixture
def health(monkeypatch) -> ApiHealth:
    """A fresh `API_HEALTH` for the rule to report to."""
    fresh = ApiHealth()
    monkeypatch.setattr(api_retry, "API_HEALTH", fresh)
    return fresh


def messages(caplog) -> list[tuple[str, str]]:
    return [(record.levelname, record.getMessage()) for record in caplog.records if record.name == "evalq.api"]


def test_an_outage_is_waited_out_and_said_once_each_way(health, caplog):
    call = Script(refused(), refused(), status(503), refused())
    assert asyncio.run(retrying(call)) == "answer" and call.calls == 5
    said = messages(caplog)
    assert [level for level, _ in said] == ["WARNING", "INFO"], said  # four failures, one warning
    assert said[0][1].startswith(f"{AWAY_MESSAGE} (ConnectError: All connection attempts failed): waiting up to 5 min")
    assert said[1][1].startswith(BACK_MESSAGE) and health.away_since is None and len(health.outages) == 1


def test_a_brief_lock_collision_is_not_an_outage(health, caplog):
    call = Script(status(503), status(503))
    assert asyncio.run(retrying(call)) == "answer"
    assert messages(caplog) == [] and not health.outages


def test_a_client_error_is_raised_at_once(health):
    call = Script(status(404))
    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(retrying(call))
    assert call.calls == 1


def test_a_deadline_ends_the_wait_with_the_last_error(health, caplog):
    call = Script(*(refused() for _ in range(100)))
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        asyncio.run(retrying(call, deadline=time.monotonic() + 0.5))
    assert 0.3 < time.monotonic() - started < 1.5 and call.calls > 3
    assert [level for level, _ in messages(caplog)] == ["WARNING"]  # a caller's own deadline (a lease): no give-up line


def test_past_the_budget_calls_give_up_and_say_so_once(health, caplog):
    health.away("scripted", time.monotonic() - OUTAGE_BUDGET_SECONDS)  # away for the whole budget already
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            asyncio.run(retrying(Script(refused())))
    errors = [message for level, message in messages(caplog) if level == "ERROR"]
    assert len(errors) == 1 and "for more than 5 min" in errors[0]


def test_forever_outlasts_any_deadline(health):
    call = Script(refused(), refused(), refused())
    assert asyncio.run(retrying(call, deadline=time.monotonic() - 1, forever=True)) == "answer"


def test_the_back_off_is_short_and_capped():
    assert delay(0) < 0.1
    assert max(delay(attempt) for attempt in range(40)) <= MAX_DELAY_SECONDS * 1.2


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_a_call_sent_after_the_outage_began_says_the_api_is_back(caplog):
    clock = Clock()
    health = ApiHealth(clock)
    sent_before = clock.now
    clock.now += 1
    health.failed(refused(), clock.now)
    clock.now += 0.1
    health.answered(sent_before)  # a request on its way when the server went down
    assert health.away_since is not None
    sent_after = clock.now
    clock.now += 30
    health.answered(sent_after)
    assert health.away_since is None and health.outages[-1] == (1001.0, 1031.1)
    assert [level for level, _ in messages(caplog)] == ["WARNING", "INFO"]


def test_slow_failures_are_an_outage_after_a_while():
    clock = Clock()
    health = ApiHealth(clock)
    timeout = httpx.ReadTimeout("scripted", request=REQUEST)
    health.failed(timeout, clock.now - 1)
    assert health.away_since is None
    health.failed(timeout, clock.now - 2)
    assert health.away_since == clock.now - 2


def test_time_without_the_api_within_a_span():
    clock = Clock()
    health = ApiHealth(clock)
    health.outages.extend([(10.0, 20.0), (30.0, 40.0)])
    assert health.unavailable_within(0.0, 100.0) == 20.0
    assert health.unavailable_within(15.0, 35.0) == 10.0
    assert health.unavailable_within(41.0, 50.0) == 0.0
    health.away("scripted", 90.0)  # still away: counts up to the end of the span
    assert health.unavailable_within(80.0, 95.0) == 5.0


def record(name: str, level: int, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_the_events_workers_complaints_become_the_one_warning(caplog):
    health = ApiHealth()
    noise = OutageNoise(health)
    unable = record("prefect.events.clients", logging.WARNING, "Unable to connect to %r. ... Reason: %s. Set ...",
                    "ws://api/events/in", "[Errno 111] Connect call failed")
    failed = record("prefect._internal.concurrency", logging.ERROR, "Service %r failed to process item %r",
                    "EventsWorker", "Event(...)")
    assert not noise.filter(unable) and not noise.filter(failed)
    assert health.away_since is not None
    assert [message for _, message in messages(caplog)] == [
        f"{AWAY_MESSAGE} (events: [Errno 111] Connect call failed): waiting up to 5 min for it; runs in flight play on"]
    other = record("prefect._internal.concurrency", logging.ERROR, "Service %r failed to process item %r",
                   "APILogWorker", "[...]")
    assert noise.filter(other)  # another service's failure is not ours to hide


def test_an_events_worker_error_without_an_outage_is_shown():
    failed = record("prefect._internal.concurrency", logging.ERROR, "Service %r failed to process item %r",
                    "EventsWorker", "Event(...)")
    assert OutageNoise(ApiHealth()).filter(failed)


def test_time_without_the_api_is_no_load_time_for_the_prefetch_tuner(monkeypatch, tmp_path):
    """An episode dispatched before an outage is seen ready after it: the campaign's sample of
    its load time leaves the outage out (else prefetch would jump to its ceiling)."""
    import flows.campaign.loop as loop_module
    from flows.campaign.dispatch import Ticket
    from flows.campaign.loop import CampaignLoop
    from flows.campaign.settings import CampaignSettings
    from flows.naming import WAITING_STATE
    from generate.models import Resources
    from kit import make_job

    health = ApiHealth()
    monkeypatch.setattr(loop_module, "API_HEALTH", health)
    monkeypatch.setattr(loop_module, "get_run_logger", lambda: logging.getLogger("test"))
    resources = Resources.model_validate({"p_1": [{"host": "127.0.0.1", "port": 1}]})
    job = make_job(tmp_path, "p", "pick", 1, ["p_1"])
    settings = CampaignSettings(
        jobs_file="jobs.json", resources_file="resources.json", results_dir=str(tmp_path), name="tuner",
        evaluator="sim", evaluator_options={}, prefetch=1, max_prefetch=3, max_in_flight=None, resume_below=None,
        submit_interval=0.0, max_attempts=3, deployment="d/local", stats_interval=60.0, tick_seconds=0.5,
        lease_seconds=320.0, poll_seconds=10.0, timeout_seconds=3600.0, only=None)
    loop = CampaignLoop([job], resources, settings, client=None)
    now = time.monotonic()
    loop.dispatched_at["run"] = now - 70.0  # dispatched 70 s ago, 60 s of which without an API
    health.outages.append((now - 65.0, now - 5.0))
    loop.note_readiness("run", Ticket(job, 1, "p_1"), WAITING_STATE)
    assert loop.tuner.ready["p_1"].value == pytest.approx(10.0, abs=0.5)


def test_a_keepalive_that_finds_its_connection_closed_is_no_error():
    from websockets.exceptions import ConnectionClosedError

    def keepalive_failed(exc: BaseException) -> logging.LogRecord:
        failed = record("websockets.client", logging.ERROR, "keepalive ping failed")
        failed.exc_info = (type(exc), exc, None)
        return failed

    noise = OutageNoise(ApiHealth())
    assert not noise.filter(keepalive_failed(ConnectionClosedError(None, None)))  # its owner reconnects
    assert noise.filter(keepalive_failed(RuntimeError("a real bug")))
