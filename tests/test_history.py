"""What a new invocation of a campaign does with its past runs (pure)."""

import dataclasses

import datetime as dt

from prefect.client.schemas.objects import StateType

from flows.campaign.history import EpisodeRecord, latest_attempts, resume_plan
from flows.naming import attempt_of, episode_run_name, idempotency_key, job_id_of_run_name

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def record(job_id: str, attempt: int, state_type: StateType | None, message: str = "", minute: int = 0) -> EpisodeRecord:
    return EpisodeRecord(run_id=f"{job_id}#{attempt}#{minute}", job_id=job_id, attempt=attempt, pool="p_1",
                         state_type=state_type, state_name=state_type.value.title() if state_type else "",
                         message=message, created=T0 + dt.timedelta(minutes=minute))


def test_run_names_carry_the_campaign_and_parse_back():
    assert episode_run_name("final", "team/pick/3") == "final:team/pick/3"
    assert episode_run_name("final", "team/pick/3", 12) == "final:team/pick/3 (attempt 12)"
    assert job_id_of_run_name("final:team/pick/3 (attempt 12)") == "team/pick/3"
    assert job_id_of_run_name("v2:dev/b:team/pick/3") == "team/pick/3"  # a campaign name with ':' and '/'
    long = episode_run_name("robot-challenge-2026-final-round-" * 3, "team/pick/3", 2)
    assert long.startswith("robot-challenge-2026-final-round-robot-…:team/pick/3 (attempt 2)") and len(long) < 70
    assert job_id_of_run_name(long) == "team/pick/3"
    # the key that makes a dispatch idempotent does not change with the name
    from generate.models import Job
    job = Job(id="team/pick/3", payload=dict(team="Team", team_slug="team", track="standard", task="pick", instance_id=3,
                                             instance_basename="b", instance_path="p"), resource_type="p_1", resource_types=["p_1"])
    assert idempotency_key("final", job, 2) == "evalq:final:team/pick/3:2"


def test_run_names_made_before_names_carried_the_campaign_parse_back():
    assert job_id_of_run_name("team/pick/3") == "team/pick/3"
    assert job_id_of_run_name("team/pick/3 (attempt 12)") == "team/pick/3"
    assert job_id_of_run_name("odd (attempt x)") == "odd (attempt x)"
    assert attempt_of(["evalq", "attempt:4"]) == 4
    assert attempt_of(["evalq"]) == 1


def test_latest_attempt_is_the_highest_number_then_the_newest():
    runs = [record("a", 2, StateType.FAILED, minute=1), record("a", 1, StateType.FAILED, minute=5),
            record("b", 1, StateType.FAILED, minute=0), record("b", 1, StateType.COMPLETED, minute=3)]
    latest = latest_attempts(runs)
    assert latest["a"].attempt == 2
    assert latest["b"].state_type == StateType.COMPLETED


def test_resume_plan_retries_failures_adopts_runs_in_flight_and_leaves_cancels():
    runs = [
        record("failed", 1, StateType.FAILED), record("failed", 2, StateType.CRASHED, "No heartbeat"),
        record("running", 1, StateType.FAILED), record("running", 2, StateType.RUNNING),
        record("cancelled", 1, StateType.CANCELLED, "by hand"),
        dataclasses.replace(record("slurm-cancel", 1, StateType.CRASHED, "Execution was cancelled by the runtime environment."),
                            cancel_requested=True),  # went through Cancelling: the user's cancel
        record("cancelling", 3, StateType.CANCELLING),
        record("completed-elsewhere", 1, StateType.COMPLETED),
    ]
    pending = ["failed", "running", "cancelled", "slurm-cancel", "cancelling", "completed-elsewhere", "new"]
    plan = resume_plan(runs, pending)
    assert plan.first_attempt("failed") == 3 and plan.first_attempt("new") == 1
    assert plan.fresh == ["failed", "completed-elsewhere"]
    assert plan.first_attempt("completed-elsewhere") == 2
    assert plan.adopted == ["running", "cancelling"] and plan.first_attempt("running") == 2
    assert set(plan.cancelled) == {"cancelled", "slurm-cancel"}
    assert plan.cancelled["cancelled"] == "Cancelled: by hand"
    assert "2 failed episodes get new attempts" in plan.summary()
    assert "2 cancelled episodes are left alone" in plan.summary()


def test_naming_cancelled_jobs_brings_them_back():
    runs = [record("cancelled", 2, StateType.CANCELLED)]
    plan = resume_plan(runs, ["cancelled"], revive_cancelled=True)
    assert plan.fresh == ["cancelled"] and plan.first_attempt("cancelled") == 3 and not plan.cancelled


def test_nothing_ran_before_means_nothing_to_say():
    plan = resume_plan([], ["a", "b"])
    assert plan.summary() is None and plan.first_attempt("a") == 1
