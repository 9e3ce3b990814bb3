"""The `grade-solution` flow: one submitted solution graded on the node whose queue ran it.

It moves the upload into its own working directory, runs the grading argv in the grader's
directory (`--grade-cwd`; the work dir for jobs queued by an older evalq) in its own process
group, for as long as it needs unless the server set a cap, watches its own flow run so that a
cancel kills the command within about a second, and leaves job.json, the outputs and a results
file in the results dir for the API. A job past its expected_time is logged once, not killed.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.states import Cancelled

from flows.grader import store
from flows.grader.command import render_argv
from flows.grader.execution import run_watched
from flows.grader.models import GradingJob, JobRecord
from flows.naming import GRADE_FLOW

STOP_STATES = {StateType.CANCELLING, StateType.CANCELLED}


class GradingFailed(RuntimeError):
    """The grading command exited non-zero or ran out of time."""


def ask_prefect(question: Callable[[object], bool]) -> bool:
    """`question(client)` asked through a short-lived client; an unreachable API answers False
    (keep grading through an API hiccup: the watcher still sees a cancel later)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return question(client)
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not read this run's state: %s", exc)
        return False


def cancel_requested(run_id: UUID) -> bool:
    """Whether someone asked Prefect to cancel this run (an unreachable API is not a cancel)."""

    def cancelled(client) -> bool:
        state = client.read_flow_run(run_id).state
        return state is not None and state.type in STOP_STATES

    return ask_prefect(cancelled)


def cancelled_since_scheduled(states: list) -> bool:
    """Whether a cancel came after the run's last Scheduled state (its history, oldest first)."""
    since = [state.type for state in states]
    if StateType.SCHEDULED in since:
        since = since[len(since) - since[::-1].index(StateType.SCHEDULED):]
    return any(kind in STOP_STATES for kind in since)


def cancelled_before_start(run_id: UUID) -> bool:
    """Whether its owner cancelled this run before it started. Prefect 3.8.8 lets the engine move
    a run from Cancelled to Running: a cancel that lands between a worker's claim (Pending) and
    the engine's start is in the history only."""
    return ask_prefect(lambda client: cancelled_since_scheduled(
        sorted(client.read_flow_run_states(run_id), key=lambda state: state.timestamp)))


def overdue_watch(expected_time: float, should_stop: Callable[[], bool], logger) -> Callable[[], bool]:
    """`should_stop`, which also logs once when the command runs past its expected_time."""
    started, warned = time.monotonic(), []

    def check() -> bool:
        if not warned and time.monotonic() - started > expected_time:
            warned.append(True)
            logger.info("running past its expected_time (%g s): flagged overdue, not killed", expected_time)
        return should_stop()

    return check


@flow(name=GRADE_FLOW)
def grade_solution(job: GradingJob):
    """Grade one solution; the run ends Completed, Failed (exit code, timeout) or Cancelled."""
    logger = get_run_logger()
    run_id = FlowRunContext.get().flow_run.id
    if cancelled_before_start(run_id):
        logger.info("cancelled by its owner before it started: not graded")
        return Cancelled(message="cancelled by its owner before it started")
    workdir = store.work_dir(job.results_dir, job.user_id, run_id)
    try:
        solution = store.take_upload(job.staged_solution, workdir)
    except FileNotFoundError:
        if cancel_requested(run_id):  # cancelled (and its upload discarded) while this run started
            return Cancelled(message="cancelled by its owner before it started")
        raise
    results = workdir / store.RESULTS
    argv = render_argv(job.grade_argv, {
        "solution": str(solution), "competition_id": job.competition_id,
        "results": str(results), "workdir": str(workdir),
    })
    cwd = Path(job.grade_cwd) if job.grade_cwd else workdir
    if not cwd.is_dir():
        raise GradingFailed(f"--grade-cwd {cwd}: no such directory on this node")
    record = JobRecord(started_at=datetime.now(timezone.utc))
    store.write_record(workdir, record)
    limit = "no time limit" if job.timeout_seconds is None else f"killed after {job.timeout_seconds:g} s"
    logger.info("grading %s for %s in %s (work dir %s; expected %g s, %s)", job.competition_id, job.user_id, cwd,
                workdir, job.expected_time, limit)
    outcome = run_watched(
        argv, cwd, workdir / store.STDOUT, workdir / store.STDERR, job.timeout_seconds,
        should_stop=overdue_watch(job.expected_time, lambda: cancel_requested(run_id), logger),
    )
    record = record.model_copy(update=dict(
        exit_code=outcome.returncode, timed_out=outcome.timed_out, cancelled=outcome.cancelled,
        completed_at=datetime.now(timezone.utc),
    ))
    if outcome.returncode == 0 and not outcome.cancelled and results.exists():
        record.results_file = store.save_results(
            job.results_dir, job.user_id, job.competition_id, record.completed_at, results.read_text(encoding="utf-8")
        )
    store.write_record(workdir, record)
    if outcome.cancelled:
        logger.info("cancelled: the grading command's process group was killed")
        return Cancelled(message="cancelled while grading; the command was killed")
    if outcome.timed_out:
        raise GradingFailed(f"timed out after {job.timeout_seconds:g} s and was killed")
    if outcome.returncode != 0:
        raise GradingFailed(f"the grading command exited with code {outcome.returncode}")
    return {"exit_code": 0, "results_file": record.results_file}
