"""Pure: task-spooler habits of `evalq submit` read into a job's fields.

- Leading `NAME=value` words of the command set its environment, as a shell (and `tsp`) does:
  `evalq submit -g 0 CUDA_VISIBLE_DEVICES=0 python train.py`.
- `--timeout`: seconds, or a number with a unit (`90m`, `4h`, `3d`); `DEFAULT_TIMEOUT` when not
  given, `0` for none.
- `EVALQ_VISIBLE_DEVICES`, else `TS_VISIBLE_DEVICES`, in the submitter's environment: the GPUs
  the queue may hand the job.
- A GPU's free-memory threshold: a fraction (`0.8`) or task-spooler's percentage (`80`).
"""

from __future__ import annotations

import re

DEFAULT_TIMEOUT = "72h"
"""The longest of the old submit script's automatic timeouts (4 h / 24 h / 72 h)."""
VISIBLE_DEVICES = ("EVALQ_VISIBLE_DEVICES", "TS_VISIBLE_DEVICES")
"""Read in this order: the first one set wins."""
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def split_environment(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """(`NAME=value` words the command starts with, the argv after them)."""
    env: dict[str, str] = {}
    for index, word in enumerate(words):
        match = _ASSIGNMENT.match(word)
        if match is None:
            return env, words[index:]
        env[match.group(1)] = match.group(2)
    return env, []


def parse_timeout(text: str | None) -> float | None:
    """Seconds before the command is killed (None: never); ValueError names `--timeout`."""
    match = _DURATION.match(DEFAULT_TIMEOUT if text is None else text)
    if match is None:
        raise ValueError(f"--timeout {text!r}: expected seconds or a number with s, m, h or d (e.g. 3600, 4h); 0 for none")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return seconds or None


def visible_devices(environ: dict[str, str]) -> list[int] | None:
    """The GPU indices `EVALQ_VISIBLE_DEVICES` (else `TS_VISIBLE_DEVICES`) allows; None: all."""
    for name in VISIBLE_DEVICES:
        text = environ.get(name, "").strip()
        if text:
            parts = [part.strip() for part in text.split(",")]
            if not all(part.isdigit() for part in parts):
                raise ValueError(f"{name}={text!r}: expected comma-separated GPU indices, e.g. 0,1")
            return sorted({int(part) for part in parts})
    return None


def parse_threshold(text: str) -> float:
    """`0.8` or `80` (percent, as `tsp --set_gpu_free_perc 80`) -> 0.8; ValueError otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise ValueError(f"GPU free threshold {text!r}: expected a fraction 0..1 (0.8) or a percentage 1..100 (80)")
    return value / 100 if value > 1 else value
