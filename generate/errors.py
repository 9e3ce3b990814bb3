"""The one exception type for bad user input: it names the file and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn


class InputError(Exception):
    """Bad input. The CLI prints `error: <path>: <problem>` and exits with code 2."""

    def __init__(self, path: Path | str | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return self.problem if self.path is None else f"{self.path}: {self.problem}"


def usage_error(command: str, problem: str) -> InputError:
    """A command's bad arguments: `<command>: <problem> (see <command> --help)`."""
    return InputError(None, f"{command}: {problem} (see {command} --help)")


def exit_with(exc: InputError) -> NoReturn:
    """`error: <exc>` on stderr, then exit code 2 (through typer, so a command's cleanup runs)."""
    import sys

    import typer

    print(f"error: {exc}", file=sys.stderr)
    raise typer.Exit(2) from None


def exit_on_input_error(func):
    """Decorate a CLI command: `InputError` becomes one line on stderr and exit code 2."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            exit_with(exc)

    return wrapper


def require_dir(path: Path | str) -> Path:
    """`path` if it is a directory; else `InputError` saying what it is instead."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "not a directory" if path.exists() else "directory not found")
    return path


def option_error(exc, options: dict[str, str] | None = None) -> InputError:
    """A pydantic `ValidationError` of command-line values as `--option: problem` (the first one).

    `options` maps model fields to their option names where they differ from `--field-name`.
    """
    first = exc.errors()[0]
    problem = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a rule across several options
        return InputError(None, problem)
    field = str(first["loc"][0])
    option = (options or {}).get(field, "--" + field.replace("_", "-"))
    return InputError(None, f"{option}: {problem}")
