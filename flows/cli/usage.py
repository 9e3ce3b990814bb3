"""Usage errors as one line: `error: evalq campaign run: Invalid value for '--max-in-flight': ...` (exit 2).

Click (through typer) prints a usage error as the command's usage, a hint and a boxed message;
evalq's own checks of bad input print one line naming the file or field and the problem. The
root group (`OneLineUsageErrors`, `cls` of the root app) says click's errors the same way: the
command, the option or argument, the problem, and `--help` for the rest. Running without
arguments still prints the help (`no_args_is_help`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer
from typer.core import TyperGroup

from generate.errors import exit_with, usage_error

UsageError = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "UsageError")
"""Click's usage error, as the installed typer has it (typer 0.29 carries its own copy of click)."""


@contextlib.contextmanager
def usage_errors_in_one_line() -> Iterator[None]:
    """Click's usage error as evalq's own input errors: `error: <command path>: <problem> (see
    <command path> --help)`, exit 2 (`generate/errors.py`)."""
    try:
        yield
    except UsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # the help, printed already
            raise
        where = error.ctx.command_path if error.ctx is not None else "evalq"
        exit_with(usage_error(where, " ".join(error.format_message().split())))


class OneLineUsageErrors(TyperGroup):
    """The root group: a usage error anywhere below it (parsing, a value's check) is one line."""

    def make_context(self, *args, **kwargs):
        with usage_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with usage_errors_in_one_line():
            return super().invoke(ctx)
