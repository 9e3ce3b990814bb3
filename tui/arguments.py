"""evaltui's command line: bad arguments in one line, as evalq's own (exit 2)."""

from __future__ import annotations

import argparse

from generate.errors import usage_error


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments in one line, as evalq's: `error: evaltui: <problem> (see evaltui --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {usage_error(self.prog, message)}\n")


def seconds_above_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # NaN included
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value
