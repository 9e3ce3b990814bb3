"""The dispatcher's rules: windows per pool, least-utilized first, thresholds, requeue order."""

import pytest

from flows.campaign.dispatch import Dispatcher
from flows.campaign.settings import resume_threshold
from generate.models import Job


def job(i: int, pools: list[str]) -> Job:
    payload = dict(team="T", team_slug="t", track="standard", task="x", instance_id=i,
                   instance_basename=f"x_{i}.json", instance_path=f"/x_{i}.json")
    return Job(id=f"t/x/{i}", payload=payload, resource_type=pools[0], resource_types=pools)


def drain(dispatcher: Dispatcher) -> list[tuple[str, str]]:
    taken = []
    while (ticket := dispatcher.next()) is not None:
        taken.append((ticket.job.id, ticket.pool))
    return taken


def test_window_is_capacity_plus_prefetch_per_pool():
    d = Dispatcher({"a": 2, "b": 1}, prefetch=1)
    for i in range(10):
        d.add(job(i, ["a"] if i < 5 else ["b"]))
    taken = drain(d)
    assert sum(1 for _, pool in taken if pool == "a") == 3
    assert sum(1 for _, pool in taken if pool == "b") == 2
    assert d.pending == 5


def test_next_job_comes_from_least_utilized_pool():
    d = Dispatcher({"a": 4, "b": 1}, prefetch=0)
    for i in range(4):
        d.add(job(i, ["a"]))
    d.add(job(9, ["b"]))
    order = [d.next().pool for _ in range(3)]
    # a and b tie at 0 (a is listed first); then b at 0/1 beats a at 1/4; then b is full.
    assert order == ["a", "b", "a"]


def test_a_job_with_two_pools_goes_where_there_is_room():
    d = Dispatcher({"a": 1, "b": 1}, prefetch=0)
    d.add(job(0, ["a"]))
    d.add(job(1, ["a", "b"]))
    assert drain(d) == [("t/x/0", "a"), ("t/x/1", "b")]
    assert d.pending == 0


def test_finished_frees_the_window():
    d = Dispatcher({"a": 1}, prefetch=0)
    d.add(job(0, ["a"]))
    d.add(job(1, ["a"]))
    ticket = d.next()
    assert d.next() is None
    d.finished(ticket)
    assert d.next().job.id == "t/x/1"


def test_stop_and_resume_thresholds_have_hysteresis():
    d = Dispatcher({"a": 10}, prefetch=0, max_in_flight=4, resume_at=1)
    for i in range(10):
        d.add(job(i, ["a"]))
    tickets = [d.next() for _ in range(4)]
    assert d.next() is None and d.stopped
    d.finished(tickets.pop())  # 3 in flight: not down to 1 yet
    assert d.next() is None
    d.finished(tickets.pop())  # 2 in flight: still more than 1
    assert d.next() is None
    d.finished(tickets.pop())  # 1 in flight: resume, up to 4 again
    assert [d.next() is not None for _ in range(4)] == [True, True, True, False] and d.stopped


def test_resume_at_zero_waits_until_every_episode_has_ended():
    """The batch submitter's `--stop_threshold 2 --resume_threshold 0`."""
    d = Dispatcher({"a": 10}, prefetch=0, max_in_flight=2, resume_at=0)
    for i in range(5):
        d.add(job(i, ["a"]))
    first = [d.next(), d.next()]
    assert d.next() is None
    d.finished(first[0])
    assert d.next() is None  # one still in flight
    d.finished(first[1])
    assert d.next() is not None and d.next() is not None and d.next() is None


def test_without_resume_at_dispatch_goes_on_as_soon_as_one_ends():
    d = Dispatcher({"a": 10}, prefetch=0, max_in_flight=2)
    for i in range(4):
        d.add(job(i, ["a"]))
    first = [d.next(), d.next()]
    assert d.next() is None
    d.finished(first[0])
    assert d.next() is not None and d.next() is None


@pytest.mark.parametrize(("max_in_flight", "resume_at", "resume_below", "expected"), [
    (2, 0, None, 0), (4, None, 2, 1), (4, None, None, 3), (None, None, None, None), (4, 3, None, 3), (4, None, 4, 3),
])
def test_resume_threshold_of_the_options(max_in_flight, resume_at, resume_below, expected):
    assert resume_threshold(max_in_flight, resume_at, resume_below) == expected


@pytest.mark.parametrize(("max_in_flight", "resume_at", "resume_below", "problem"), [
    (2, None, 0, "--resume-below 0: dispatch would never resume"),
    (2, -1, None, "--resume-at -1: dispatch would never resume"),
    (None, 0, None, "--resume-at needs --max-in-flight"),
    (2, 0, 1, "give one"),
    (4, 6, None, "--resume-at 6: below --max-in-flight 4"),  # a pause that resumes at once
    (4, 4, None, "--resume-at 4: below --max-in-flight 4"),
    (4, None, 5, "--resume-below 5: at most --max-in-flight 4"),
])
def test_thresholds_that_never_resume_are_refused(max_in_flight, resume_at, resume_below, problem):
    with pytest.raises(ValueError, match=problem):
        resume_threshold(max_in_flight, resume_at, resume_below)


def test_requeue_goes_first_with_its_attempt():
    d = Dispatcher({"a": 1}, prefetch=0)
    d.add(job(0, ["a"]))
    d.add(job(1, ["a"]), attempt=2, front=True)
    ticket = d.next()
    assert (ticket.job.id, ticket.attempt) == ("t/x/1", 2)


def test_many_jobs_dispatch_in_linear_time():
    d = Dispatcher({f"p{n}": 1 for n in range(50)}, prefetch=1)
    for i in range(50_000):
        d.add(job(i, [f"p{i % 50}"]))
    assert len(drain(d)) == 100


def test_pool_prefetch_widens_one_pools_window():
    d = Dispatcher({"a": 1, "b": 1}, prefetch=1)
    d.pool_prefetch["a"] = 3
    for i in range(10):
        d.add(job(i, ["a"] if i < 5 else ["b"]))
    taken = drain(d)
    assert sum(1 for _, pool in taken if pool == "a") == 4
    assert sum(1 for _, pool in taken if pool == "b") == 2


def test_the_most_constrained_jobs_go_first_and_requeues_before_them():
    flexibility = {"t/x/0": 3, "t/x/1": 1, "t/x/2": 2, "t/x/3": 1, "t/x/7": 3}
    d = Dispatcher({"a": 10}, prefetch=0, alternatives=lambda j: flexibility[j.id])
    for i in range(4):
        d.add(job(i, ["a"]))
    d.add(job(7, ["a"]), attempt=2, front=True)
    assert [job_id for job_id, _ in drain(d)] == ["t/x/7", "t/x/1", "t/x/3", "t/x/2", "t/x/0"]


def test_a_pool_feeds_its_restricted_server_too():
    """Pool `lab`: G runs everything, R only `reach`. Constrained `push` jobs (G only) come
    first, but not all of them: R gets a `reach` job, each server one more to load ahead (so a
    flexible episode of another pool does not find R free while R's next one loads), and each
    ticket names its server."""
    def compatible(job: Job, pool: str) -> list[str]:
        return ["G"] if job.id.startswith("push") else ["G", "R"]

    d = Dispatcher({"lab": 2}, prefetch=1, alternatives=lambda j: len(compatible(j, "lab")),
                   servers={"lab": {"G": 1, "R": 1}}, compatible=compatible)
    for i in range(3):
        d.add(job(i, ["lab"]).model_copy(update={"id": f"push/{i}"}))
        d.add(job(i, ["lab"]).model_copy(update={"id": f"reach/{i}"}))
    tickets = [d.next() for _ in range(4)]
    assert d.next() is None  # capacity 2 + one ahead per server
    assert [(t.job.id, t.server) for t in tickets] == [("push/0", "G"), ("reach/0", "R"), ("push/1", "G"), ("reach/1", "R")]
    d.finished(tickets[1])
    assert (lambda t: (t.job.id, t.server))(d.next()) == ("reach/2", "R")


def test_an_episode_that_landed_elsewhere_frees_its_server_for_another():
    """Meant for W (pool wide), the episode took R (pool lab): W and its pool's window are
    counted free again, and W gets the next job at once."""
    d = Dispatcher({"wide": 1, "lab": 1}, prefetch=0, servers={"wide": {"W": 1}, "lab": {"R": 1}})
    for i in range(2):
        d.add(job(i, ["wide"]))
    first = d.next()
    assert (first.pool, first.server) == ("wide", "W") and d.next() is None
    d.landed(first, "R", "lab")
    assert d.meant_for == {"W": 0, "R": 1} and d.in_flight == {"wide": 0, "lab": 1}
    second = d.next()
    assert (second.job.id, second.server) == ("t/x/1", "W")
    d.finished(first)
    assert d.meant_for["R"] == 0 and d.in_flight == {"wide": 1, "lab": 0}


def test_a_job_no_server_of_its_pool_can_run_is_still_dispatched():
    """Its episode reports the configuration error; left queued, the campaign would never end."""
    d = Dispatcher({"odd": 1}, prefetch=0, servers={"odd": {"S": 1}}, compatible=lambda job, pool: [])
    d.add(job(0, ["odd"]))
    ticket = d.next()
    assert ticket is not None and ticket.server == "S" and d.pending == 0
