"""The shortest possible span of a campaign whose jobs may only run on some servers.

Group the jobs by the set of servers that can run them. For any collection of groups, their
work must be done by the servers that can serve at least one of them, so the span is at
least (their work) / (those servers' slots). The largest such ratio over every collection is
the bound (it is what the fractional relaxation, a max-flow, achieves). Exhaustive over
collections, which is fine for the bench's handful of groups.
"""

from __future__ import annotations

from itertools import combinations


def lower_bound(work: dict[frozenset[str], float], capacity: dict[str, int]) -> float:
    """`work`: seconds of work per set of compatible servers; `capacity`: slots per server."""
    groups = [(servers, seconds) for servers, seconds in work.items() if seconds > 0]
    best = 0.0
    for size in range(1, len(groups) + 1):
        for chosen in combinations(groups, size):
            servers = frozenset().union(*(s for s, _ in chosen))
            best = max(best, sum(seconds for _, seconds in chosen) / sum(capacity[s] for s in servers))
    return best
