"""Option values the command groups share: durations (`7d`, `1h`)."""

from __future__ import annotations

import datetime as dt
import re

from generate.errors import InputError

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, option: str = "--older-than") -> dt.timedelta:
    """`90s`, `15m`, `12h`, `7d`, `2w` -> a timedelta; else `InputError` naming the option."""
    match = DURATION.match(text)
    if not match:
        raise InputError(None, f"{option} {text!r}: expected a number and a unit s, m, h, d or w (e.g. 7d)")
    return dt.timedelta(seconds=float(match.group(1)) * UNIT_SECONDS[match.group(2)])
