"""Running the campaign flow from the command line, with or without a Prefect server of one's own.

SIGTERM or Ctrl-C stops it with one line and no traceback (`SignalStop`): the campaign ends
at its next tick, the local runner (if it started one) crashes the runs it holds, and the same
command goes on where it stopped. A local runner that cannot be kept alive stops it with one
line too (`LocalStack.failure`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from flows.runtime.discovery import Found, Source, configured_api
from flows.runtime.local_stack import LocalStack, flush_prefect_clients

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stack_server(stack: LocalStack) -> Found:
    """Which server a local stack found or started, for the line that says so."""
    if stack.shared_server:
        return Found(stack.api_url, Source.USER_SERVER)
    if stack.server is not None:
        return Found(stack.api_url, Source.FOLDER, home=stack.home, started=True)
    return configured_api() or Found(stack.api_url, Source.ENVIRONMENT)


def run_where_found(settings: dict, worker_limit: int, home: Path, api: str | None, batch: bool = False) -> dict:
    """`run_campaign` on the server `--api` or PREFECT_API_URL names (checked and announced),
    else on a local stack."""
    import contextlib

    from flows.runtime.discovery import check_server, pointed_at

    with contextlib.ExitStack() as pointed:
        if (configured := configured_api(api)) is not None:  # else the local stack finds or starts one
            check_server(configured)
            pointed.enter_context(pointed_at(configured.api_url))
            configured.announce()
        return run_campaign(settings, worker_limit, home, batch=batch)


def run_campaign(settings: dict, worker_limit: int, home: Path, stack: LocalStack | None = None, batch: bool = False) -> dict:
    """Run the campaign flow (with `batch`, the batch flow) in this process and print its summary.

    Without a configured server (`--api`, PREFECT_API_URL) and no `stack` given, a local stack
    (the user's `evalq server` or this folder's embedded database, with a local runner) serves
    the campaign's duration (started before this module imports Prefect).
    """
    with SignalStop(settings["name"], "Batch" if batch else "Campaign") as signals:
        if stack is None and configured_api() is None:
            with LocalStack(home, worker_limit=worker_limit) as own_stack:
                stack_server(own_stack).announce()
                return run_flow(settings, own_stack, signals, batch)
        return run_flow(settings, stack, signals, batch)


def run_flow(settings: dict, stack: LocalStack | None, signals: "SignalStop", batch: bool = False) -> dict:
    from flows.campaign.loop import STOP_HOOKS, Stop
    from flows.cli.console import (
        batch_summary_tables,
        campaign_progress,
        console,
        summary_tables,
    )
    from flows.naming import MISCONFIGURED_STATE
    from flows.runtime.outages import handle_api_outages
    from flows.runtime.zombies import heartbeating
    from generate.errors import InputError

    if batch:
        from flows.batch.flow import batch as flow
    else:
        from flows.campaign.flow import campaign as flow

    def runner_lost() -> Stop | None:
        return Stop("its local runner could not be kept alive") if stack is not None and stack.failure else None

    hooks = [signals.hook, runner_lost]
    STOP_HOOKS.extend(hooks)
    handle_api_outages()  # before the flow's first log lines, which an outage must not lose either
    try:
        with campaign_progress(settings.get("stats_interval", 60.0), "items" if batch else "episodes"), \
                heartbeating():  # the zombie automation crashes runs silent for 6 min
            state = asyncio.run(flow(**settings, return_state=True))
    finally:
        signals.listening = False  # from here a signal ends the command at once
        for hook in hooks:
            STOP_HOOKS.remove(hook)
    if signals.caught is not None:
        raise Interrupted(signals.caught)
    if stack is not None and stack.failure:
        raise SystemExit(f"error: campaign {settings['name']!r} stopped: {stack.failure}")
    if state.name == MISCONFIGURED_STATE:
        flush_prefect_clients()  # the flow's last events and logs, before the line that ends the command
        raise InputError(None, state.message)
    if not state.is_completed():
        raise SystemExit(f"error: {'batch' if batch else 'campaign'} flow ended {state.name}: {state.message}")
    summary = state.result()
    for table in (batch_summary_tables if batch else summary_tables)(summary):
        console.print(table)
    return summary


class Interrupted(KeyboardInterrupt):
    """A SIGTERM or Ctrl-C that ends the command where it is."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class SignalStop:
    """SIGTERM and Ctrl-C end `evalq campaign run` with one line. The first one, while the
    campaign flow runs, stops it at its next tick (a stop hook, which also puts these handlers
    back over the SIGTERM bridge Prefect's engine installs for the flow); any other (a second
    one, or one while servers start or stop) at once. Either way the runner and server this
    command started are stopped on the way out, and exit code is 128 + the signal."""

    def __init__(self, name: str, what: str = "Campaign"):
        self.name = name
        self.what = what
        self.caught: int | None = None
        self.listening = False
        """The flow is running and its stop hook watches `caught`."""
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "SignalStop":
        import threading

        if threading.current_thread() is threading.main_thread():  # elsewhere signals are not ours to take
            self._previous = {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}
        return self

    def _on_signal(self, signum: int, frame) -> None:
        first, self.caught = self.caught is None, signum
        if not (first and self.listening):
            raise Interrupted(signum)

    def hook(self):
        """The campaign's stop hook (called in its thread, the main one)."""
        from flows.campaign.loop import Stop

        if not self.listening and self._previous:
            for signum in SIGNALS:
                signal.signal(signum, self._on_signal)
            self.listening = True
        return None if self.caught is None else Stop(f"stopped by {signal_name(self.caught)}", asked=True)

    def __exit__(self, kind, exc, traceback) -> None:
        self.listening = False
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if exc is None or not isinstance(exc, (KeyboardInterrupt, termination_signal())):
            return
        signum = getattr(exc, "signum", None) or getattr(exc, "signal", None) or signal.SIGINT
        print(f"{self.what} {self.name!r} stopped by {signal_name(signum)}; the same command goes on where it stopped",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def termination_signal() -> type:
    """Prefect's exception for a SIGTERM that came before our handlers were back."""
    from prefect.exceptions import TerminationSignal

    return TerminationSignal
