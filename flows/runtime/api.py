"""Talking to a Prefect API from outside Prefect's client: does it answer, wait until it
does, fail in one line when it does not, and point this process's client at it."""

from __future__ import annotations

import time
from typing import Callable

import httpx

from generate.errors import InputError


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_answers(url: str, seconds: float, interval: float = 0.25, dead: Callable[[], bool] = lambda: False) -> bool:
    """Poll `url` until it answers 200 (True), `seconds` pass or `dead()` says stop waiting (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not dead():
        if answers(url):
            return True
        time.sleep(interval)
    return False


def api_answers(api_url: str, timeout: float = 2.0) -> bool:
    return answers(f"{api_url.rstrip('/')}/health", timeout)


def check_api(api_url: str) -> None:
    """Fail with one line when the Prefect API does not answer."""
    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise InputError(None, f"Prefect API at {api_url} unreachable ({exc.__class__.__name__}: {exc})") from None


def use_api(api_url: str):
    """A context in which this process's Prefect client talks to `api_url`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url})
