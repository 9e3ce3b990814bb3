"""Expand one command over seeds: `--seed 42 --seeds 4` -> four jobs, seeds 42 to 45, with `{seed}`
substituted (as the old submit script queued them); `--seeds 0-4` or `--seeds 1,3,7` lists them."""

from __future__ import annotations

PLACEHOLDER = "{seed}"
FIRST_SEED = 42
"""Where a count of seeds starts without `--seed` (the old submit script's default)."""


def parse_seeds(text: str) -> list[int]:
    """`"0-4"`, `"1,3,7"` or `"0-2,10"` -> the seeds in order, without repeats."""
    seeds: list[int] = []
    for part in (part.strip() for part in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"seeds must look like 0-4 or 1,3,7, got {text!r}")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"seed range {part!r} runs backwards")
        seeds.extend(seed for seed in range(first, last + 1) if seed not in seeds)
    return seeds


def seed_list(seed: int | None, seeds: str | None) -> list[int | None]:
    """The seed of each job one submit queues ([None]: one job, no seed).

    `--seeds N` (a bare number) counts: N seeds from `--seed` (default `FIRST_SEED`) on; a range
    or a list names them (then `--seed` is refused: one or the other)."""
    if seeds is None:
        return [seed]
    text = seeds.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"--seeds {text}: a count of seeds must be at least 1")
        first = FIRST_SEED if seed is None else seed
        return list(range(first, first + int(text)))
    if seed is not None:
        raise ValueError(f"--seed {seed} with --seeds {seeds}: give the first seed and a count (--seed 42 --seeds 4), or a list (--seeds 1,3)")
    return list(parse_seeds(text))


def substitute(argv: list[str], seed: int) -> list[str]:
    """`argv` with every `{seed}` replaced by the seed (other braces are left alone)."""
    return [arg.replace(PLACEHOLDER, str(seed)) for arg in argv]
