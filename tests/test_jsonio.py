"""Atomic outputs: never a partial file, never a replaced result."""

import os
import threading

import pytest

from generate.jsonio import write_atomic, write_new_atomic


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "jobs.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["jobs.json"]


def test_write_new_atomic_never_replaces(tmp_path):
    target = tmp_path / "metrics" / "t_1.json"
    assert write_new_atomic(target, "first")
    assert not write_new_atomic(target, "second")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["t_1.json"]


def test_racing_writers_exactly_one_wins(tmp_path):
    target = tmp_path / "t_2.json"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        results.append(write_new_atomic(target, f"writer {i}"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert target.read_text().startswith("writer ")


def _plain_open_mode(path) -> int:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("x")
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        expected = _plain_open_mode(tmp_path / "plain.json")
        write_atomic(tmp_path / "jobs.json", "{}")
        write_new_atomic(tmp_path / "metrics" / "t_1.json", "{}")
    finally:
        os.umask(old)
    assert expected == 0o666 & ~umask
    assert (tmp_path / "jobs.json").stat().st_mode & 0o777 == expected
    assert (tmp_path / "metrics" / "t_1.json").stat().st_mode & 0o777 == expected


def test_private_atomic_writes_stay_with_their_owner(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "environment.json", "{}", private=True)
    finally:
        os.umask(old)
    assert (tmp_path / "environment.json").stat().st_mode & 0o777 == 0o600
