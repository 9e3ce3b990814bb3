"""`--only FILE`: which job ids a campaign runs."""

import pytest

from flows.campaign.selection import parse_id_lines, read_only_file, select_jobs
from generate.errors import InputError
from kit import make_job


def test_id_file_skips_blanks_and_comments_and_names_the_line_of_an_unknown_id(tmp_path):
    assert parse_id_lines("# rerun\n\na/pick/1\n  b/pick/2  # flaky\n#c/pick/3\n") == [(3, "a/pick/1"), (4, "b/pick/2")]
    listed = tmp_path / "failed.txt"
    listed.write_text("a/pick/1\na/pick/1\nb/pick/2\n")
    assert read_only_file(listed, {"a/pick/1", "b/pick/2"}) == ["a/pick/1", "b/pick/2"]
    listed.write_text("a/pick/1\n\nzz/pick/9\n")
    with pytest.raises(InputError, match=r"failed.txt: line 3: unknown job id 'zz/pick/9'"):
        read_only_file(listed, {"a/pick/1"})
    with pytest.raises(InputError, match="file not found"):
        read_only_file(tmp_path / "nope.txt", set())


def test_select_jobs_keeps_the_jobs_file_order(tmp_path):
    jobs = [make_job(tmp_path, "t", "pick", i, ["p_1"]) for i in range(3)]
    assert [j.id for j in select_jobs(jobs, ["t/pick/2", "t/pick/0"])] == ["t/pick/0", "t/pick/2"]
    with pytest.raises(ValueError, match="t/pick/7"):
        select_jobs(jobs, ["t/pick/7"])
