"""Rules 4, 6, 8, 9: which jobs a plan holds, their pools and their order."""

from __future__ import annotations

import pytest
from data_generate.challenge import Challenge, server

from generate.cli import plan_challenge
from generate.errors import InputError
from generate.models import JobList


@pytest.fixture
def challenge(tmp_path) -> Challenge:
    challenge = Challenge(tmp_path)
    challenge.task("pick", ids=(1, 2))
    challenge.task("open", ids=(1,))
    return challenge


def plan(challenge: Challenge, **options):
    return plan_challenge(challenge.instances, challenge.submissions, challenge.resources_raw, challenge.results, **options)


def ids(plan) -> list[str]:
    return [job.id for job in plan.jobs]


def test_jobs_for_tasks_scoring_above_zero(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 0.1, "open": 0.0})
    challenge.servers({"a": [server(1)]})
    assert ids(plan(challenge)) == ["a/pick/1", "a/pick/2"]


def test_all_tasks_teams_get_every_listed_task(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 0.0, "open": 0.0})
    challenge.submission("b.json", "B", 0.4, {"pick": 0.0})
    challenge.servers({"a": [server(1)], "b": [server(2)]})
    assert ids(plan(challenge, all_tasks=["a"])) == ["a/open/1", "a/pick/1", "a/pick/2"]


def test_all_tasks_for_an_unknown_or_unselected_team_is_a_warning(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1})
    challenge.submission("b.json", "B", 0.4, {"pick": 1})
    challenge.servers({"a": [server(1)], "b": [server(2)]})
    result = plan(challenge, top_k=1, all_tasks=["b", "nobody"])
    assert ids(result) == ["a/pick/1", "a/pick/2"]
    assert any("--all-tasks b" in w for w in result.warnings)
    assert any("--all-tasks nobody" in w for w in result.warnings)


def test_only_the_top_k_of_each_track_get_jobs(challenge):
    challenge.submission("a.json", "A", 0.9, {"open": 1})
    challenge.submission("b.json", "B", 0.5, {"open": 1})
    challenge.submission("c.json", "C", 0.1, {"open": 1}, track="privileged")
    challenge.servers({slug: [server(port)] for port, slug in enumerate("abc", 1)})
    result = plan(challenge, top_k=1)
    assert ids(result) == ["a/open/1", "c/open/1"]
    assert [(row.entrant.team_slug, row.jobs) for row in result.entrants] == [("a", 1), ("b", 0), ("c", 1)]


def test_a_task_without_a_folder_is_skipped_with_a_warning(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1, "stack": 1})
    challenge.servers({"a": [server(1)]})
    result = plan(challenge)
    assert ids(result) == ["a/pick/1", "a/pick/2"]
    assert [w for w in result.warnings if "stack" in w] == ["task stack: no folder in the test instances; skipped for a"]


def test_instances_with_results_get_no_job_and_count_as_done(challenge):
    challenge.submission("a.json", "Équipe Λ", 0.5, {"pick": 1})
    challenge.servers({"equipe_l": [server(1)]})
    challenge.result("equipe_l", "pick", 2)
    challenge.result("equipe_l", "open", 1)
    challenge.result("someone_else", "pick", 1)
    result = plan(challenge)
    assert ids(result) == ["equipe_l/pick/1"]
    assert (result.entrants[0].jobs, result.entrants[0].done) == (1, 1)


def test_resource_types_are_all_compatible_pools_in_pool_order(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1, "open": 1})
    challenge.servers(
        {
            "a": [
                server(1, compatible_task="open"),
                server(2, not_compatible_task="open"),
                server(3, compatible_task=["pick", "open"]),
                server(4, compatible_task="nothing"),
            ]
        }
    )
    pools = {job.payload.task: (job.resource_type, job.resource_types) for job in plan(challenge).jobs}
    assert pools == {"open": ("a_1", ["a_1", "a_3"]), "pick": ("a_2", ["a_2", "a_3"])}


def test_jobs_with_no_compatible_pool_are_left_out_with_a_warning(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1, "open": 1})
    challenge.submission("b.json", "B", 0.4, {"pick": 1})
    challenge.servers({"a": [server(1, compatible_task="open")]})
    result = plan(challenge)
    assert ids(result) == ["a/open/1"]
    assert [str(u) for u in result.unserved] == [
        "a: no server compatible with task pick; 2 jobs not emitted",
        "b: no server compatible with task pick; 2 jobs not emitted",
    ]
    assert result.warnings[-2:] == [str(u) for u in result.unserved]


def test_strict_makes_unserved_jobs_an_error(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1})
    challenge.servers({"a": [server(1, compatible_task="open")]})
    with pytest.raises(InputError, match="a: no server compatible with task pick"):
        plan(challenge, strict=True)


def test_strict_is_fine_when_every_job_has_a_pool(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1})
    challenge.servers({"a": [server(1, compatible_task="pick")]})
    assert len(plan(challenge, strict=True).jobs) == 2


def test_done_jobs_need_no_pool(challenge):
    challenge.submission("a.json", "A", 0.5, {"open": 1})
    challenge.result("a", "open", 1)
    result = plan(challenge, strict=True)
    assert (result.jobs, result.unserved) == ([], [])


def test_resources_team_without_submission_is_a_warning(challenge):
    challenge.submission("a.json", "Équipe Λ", 0.5, {"pick": 1})
    challenge.servers({"equipe_l": [server(1)], "ghost": [server(2)], "Équipe Λ": [server(3)]})
    result = plan(challenge)
    unused = [w for w in result.warnings if w.startswith("resources-raw team")]
    assert len(unused) == 2
    assert "ghost" in unused[0]
    assert "Équipe Λ" in unused[1] and "did you mean equipe_l?" in unused[1]


def test_job_layout(challenge):
    challenge.submission("privileged.a.json", "Équipe Λ", 0.5, {"open": 1})
    challenge.servers({"equipe_l": [server(1)]})
    (job,) = plan(challenge).jobs_json()
    path = str(challenge.instances / "open" / "open_1_template-tro_state.json")
    assert job == {
        "id": "equipe_l/open/1",
        "payload": {
            "team": "Équipe Λ",
            "team_slug": "equipe_l",
            "track": "privileged",
            "task": "open",
            "instance_id": 1,
            "instance_basename": "open_1_template-tro_state.json",
            "instance_path": path,
        },
        "resource_type": "equipe_l_1",
        "resource_types": ["equipe_l_1"],
    }
    assert list(job) == ["id", "payload", "resource_type", "resource_types"]
    assert JobList.validate_python([job])[0].metrics_path(challenge.results).name == "open_1.json"
    video = JobList.validate_python([job])[0].video_path(challenge.results)
    assert video == challenge.results / "equipe_l" / "videos" / "equipe_l" / "open_1.mp4"


def test_video_path_slugs_the_user():
    from generate.models import video_path

    assert video_path("r", "equipe_l", "Équipe Λ/../x", "pick", 3).parts == ("r", "equipe_l", "videos", "equipe_l_x", "pick_3.mp4")


def test_jobs_are_ordered_by_track_rank_task_instance(challenge):
    challenge.task("pick", ids=(10,))
    challenge.submission("p.json", "P", 0.99, {"pick": 1}, track="privileged")
    challenge.submission("b.json", "B", 0.5, {"pick": 1, "open": 1})
    challenge.submission("a.json", "A", 0.5, {"pick": 1})
    challenge.submission("c.json", "C", 0.7, {"open": 1})
    challenge.servers({slug: [server(port)] for port, slug in enumerate("abcp", 1)})
    assert ids(plan(challenge)) == [
        "c/open/1",
        "a/pick/1", "a/pick/2", "a/pick/10",
        "b/open/1", "b/pick/1", "b/pick/2", "b/pick/10",
        "p/pick/1", "p/pick/2", "p/pick/10",
    ]  # fmt: skip


def test_pool_job_counts(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1, "open": 1})
    challenge.servers({"a": [server(1), server(2, compatible_task="open")], "z": [server(3)]})
    assert plan(challenge).jobs_per_pool() == {"a_1": 3, "a_2": 1}


def test_why_no_jobs_names_the_reason(challenge):
    challenge.submission("a.json", "A", 0.5, {"pick": 1, "open": 0})
    challenge.servers({"a": [server(1, compatible_task="open")]})
    assert plan(challenge, all_tasks=["a"]).why_no_jobs() is None
    assert plan(challenge, top_k=0).why_no_jobs() == "no entrant is selected (--top-k 0?)"
    assert "see the warnings" in plan(challenge).why_no_jobs()
    challenge.result("a", "pick", 1)
    challenge.result("a", "pick", 2)
    assert plan(challenge).why_no_jobs() == "all 2 episodes of the selected entrants already have results"
    challenge.submission("a.json", "A", 0.5, {"pick": 0, "open": 0})
    assert "no selected entrant scored above 0" in plan(challenge).why_no_jobs()
