"""What the policy servers saw: utilization, handoff gaps and bounds from their own busy log.

Input: intervals `{"server", "episode", "start", "end"}` (JSON lines written by the demo
policy servers, by their clocks). Output: utilization, handoff gaps, makespan and the
lower bound it is compared against.
"""

from __future__ import annotations

import statistics
from collections import defaultdict


def by_server(intervals: list[dict]) -> dict[str, list[dict]]:
    servers: dict[str, list[dict]] = defaultdict(list)
    for interval in intervals:
        servers[interval["server"]].append(interval)
    return {server: sorted(items, key=lambda i: i["start"]) for server, items in servers.items()}


def handoff_gaps(intervals: list[dict], capacities: dict[str, int]) -> list[float]:
    """Idle seconds between one episode's end and the next one's start on a capacity-1 server."""
    gaps = []
    for server, items in by_server(intervals).items():
        if capacities.get(server, 1) != 1:
            continue
        gaps += [max(0.0, nxt["start"] - prev["end"]) for prev, nxt in zip(items, items[1:])]
    return gaps


def utilization(intervals: list[dict], capacities: dict[str, int], window: tuple[float, float]) -> float:
    """Busy server-seconds inside `window` / (total capacity x window length)."""
    low, high = window
    busy = sum(max(0.0, min(i["end"], high) - max(i["start"], low)) for i in intervals)
    return busy / (sum(capacities.values()) * (high - low)) if high > low else 0.0


def steady_window(intervals: list[dict]) -> tuple[float, float]:
    """From when every server has started its first episode to when the first one runs dry."""
    servers = by_server(intervals).values()
    return max(items[0]["start"] for items in servers), min(items[-1]["end"] for items in servers)


def lower_bound(intervals: list[dict], capacities: dict[str, int]) -> float:
    """The shortest possible makespan: the busiest server's work / its capacity."""
    return max(sum(i["end"] - i["start"] for i in items) / capacities.get(server, 1)
               for server, items in by_server(intervals).items())


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def summarize(intervals: list[dict], capacities: dict[str, int], started: float, held: list[float]) -> dict:
    ended = max(i["end"] for i in intervals)
    first = min(i["start"] for i in intervals)
    gaps = handoff_gaps(intervals, capacities)
    episode_seconds = [i["end"] - i["start"] for i in intervals]
    return {
        "episodes": len(intervals),
        "servers": len(capacities),
        "episode_seconds_mean": round(statistics.fmean(episode_seconds), 3),
        "makespan_s": round(ended - started, 1),
        "makespan_from_first_episode_s": round(ended - first, 1),
        "lower_bound_s": round(lower_bound(intervals, capacities), 1),
        "utilization_whole": round(utilization(intervals, capacities, (first, ended)), 3),
        "utilization_steady": round(utilization(intervals, capacities, steady_window(intervals)), 3),
        "handoff_p50_s": round(percentile(gaps, 0.5), 3),
        "handoff_p95_s": round(percentile(gaps, 0.95), 3),
        "slot_overhead_mean_s": round(statistics.fmean(held) - statistics.fmean(episode_seconds), 3) if held else None,
    }
