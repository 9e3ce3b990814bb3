"""The bench's lower bound for campaigns with compatibility constraints (pure)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from bounds import lower_bound  # noqa: E402


def test_flexible_work_spreads_but_exclusive_work_does_not():
    cap = {"gen": 1, "res": 1}
    # 6 s only gen can do, 6 s either can do: 12 s over 2 servers -> 6 s, and gen alone needs 6 s.
    assert lower_bound({frozenset({"gen"}): 6, frozenset({"gen", "res"}): 6}, cap) == 6
    # 10 s only gen can do dominates: the flexible work cannot help it.
    assert lower_bound({frozenset({"gen"}): 10, frozenset({"gen", "res"}): 2}, cap) == 10


def test_a_job_that_fits_three_servers_and_capacities():
    cap = {"a": 2, "b": 1, "c": 1}
    work = {frozenset({"a"}): 8, frozenset({"b"}): 6, frozenset({"a", "b", "c"}): 10}
    # everything over every slot: 24 / 4 = 6; b alone: 6; a alone: 4 -> 6
    assert lower_bound(work, cap) == 6
    work[frozenset({"b"})] = 9
    assert lower_bound(work, cap) == 9
