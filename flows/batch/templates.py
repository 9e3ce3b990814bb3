"""Filling a batch's templates for one item: the command's argv (`--command`) and a deployment's
parameters (`--parameter key=value`). Pure.

A template names `{item}`, `{item_dir}` (`<results-dir>/<item>`, for the item's outputs),
`{results_dir}`, `{batch}` and `{attempt}`; `{{` and `}}` are literal braces. The command is
split like a shell would (it is the user's own line, not data) and filled argument by
argument, so an item id never becomes two arguments, and no shell runs. A parameter's value is
JSON when it parses to anything but a string (`--parameter retries=2` is the number 2), else a
string filled per item (`--parameter item={item}` stays a string, even for an item `007`).
"""

from __future__ import annotations

import json
import shlex
import string
from pathlib import Path

from generate.errors import InputError

PLACEHOLDERS = ("item", "item_dir", "results_dir", "batch", "attempt")


def placeholders_of(template: str) -> list[str]:
    """The `{name}`s of a template; `ValueError` for a malformed one (a lone `{`)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(template: str, option: str, given: str | None = None) -> None:
    """`InputError` naming `option` and what it was `given` (default `template`) for an unknown
    or malformed placeholder."""
    shown = template if given is None else given
    try:
        names = placeholders_of(template)
    except ValueError as exc:
        raise InputError(None, f"{option} {shown!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    unknown = [name for name in names if name not in PLACEHOLDERS]
    if unknown:
        known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        raise InputError(None, f"{option} {shown!r}: unknown placeholder {{{unknown[0]}}} (known: {known})")


def parse_command(command: str) -> list[str]:
    """`--command`'s line as an argv template; `InputError` for an empty or malformed one."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InputError(None, f"--command {command!r}: {exc}") from None
    if not argv:
        raise InputError(None, "--command is empty")
    for arg in argv:
        check_template(arg, "--command", command)
    return argv


def parse_pairs(pairs: list[str], option: str, templated: bool) -> dict:
    """`key=value` pairs of `option`: values JSON when they parse (and, `templated`, name no
    placeholder), else strings; `InputError` naming the option for a pair without `=`."""
    values: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(None, f"{option} {pair!r}: expected key=value")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if not templated or not isinstance(parsed, str):
            values[key] = parsed  # a number, a list, an object: as it is
            continue
        check_template(parsed, option)
        values[key] = parsed  # a template: filled per item (`{{` becomes `{`)
    return values


def values_for(item: str, batch: str, results_dir: str, attempt: int) -> dict[str, str]:
    """What the placeholders stand for, for one attempt of one item."""
    return {"item": item, "item_dir": str(Path(results_dir) / item), "results_dir": results_dir, "batch": batch,
            "attempt": str(attempt)}


def fill_argv(template: list[str], values: dict[str, str]) -> list[str]:
    return [arg.format_map(values) for arg in template]


def fill_parameters(templates: dict, values: dict[str, str]) -> dict:
    """Each string parameter filled as a template; the others (numbers, lists...) as they are."""
    return {key: value.format_map(values) if isinstance(value, str) else value for key, value in templates.items()}
