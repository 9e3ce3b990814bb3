"""Reading JSON inputs with one-line errors, and writing outputs atomically."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from generate.errors import InputError

T = TypeVar("T")


def read_text(path: Path | str) -> str:
    """A UTF-8 text file's contents; a missing or unreadable file raises `InputError`."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read: {exc.strerror if isinstance(exc, OSError) else exc}") from None


def read_json(path: Path | str) -> Any:
    """Parse a JSON file; an unreadable or malformed file raises `InputError`."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def read_model(path: Path | str, model: type[T] | TypeAdapter) -> T:
    """Read and validate a JSON file into a pydantic model (or adapter)."""
    data = read_json(path)
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise InputError(path, describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first validation problem as `field.path: message`."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def dump_json(data: Any) -> str:
    """Stable, readable JSON text for output files."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def temp_path_beside(path: Path) -> Path:
    """A fresh hidden name in `path`'s directory (same filesystem, so a rename onto `path` is atomic).

    It keeps `path`'s suffix (`.pick_3.1f2e.tmp.mp4`): tools that choose a format by extension
    (video encoders) write the right one.
    """
    return path.parent / f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}"


def _create_exclusive(path: Path, private: bool) -> tuple[int, Path]:
    """Create a new temporary file beside `path` with the mode a plain `open(path, "w")` would give
    (0600 at most if `private`).

    `tempfile.mkstemp` makes files 0600 whatever the umask, and a rename keeps that mode: results
    on a shared cluster would be unreadable by anyone else. Here the kernel applies the umask.
    """
    mode = 0o600 if private else 0o666
    while True:
        tmp = temp_path_beside(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode), tmp
        except FileExistsError:
            continue


def _synced_temp(path: Path, text: str, private: bool = False) -> Path:
    """`text` in a fsynced temporary file beside `path` (same filesystem, so renames are atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_exclusive(path, private)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def move_into_place(tmp: Path, path: Path, replace: bool) -> bool:
    """Rename the finished file `tmp` onto `path` in one step; `tmp` is gone afterwards.

    `replace=False` never replaces: False if `path` already exists (two racing writers:
    exactly one wins).
    """
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path | str, text: str, private: bool = False) -> None:
    """Write `text` to `path` so readers see the old file or the new one, never a part.

    The file gets the mode `open(path, "w")` gives under the umask; `private` keeps it to its
    owner (0600), for files that may hold secrets (a captured environment).
    """
    path = Path(path)
    move_into_place(_synced_temp(path, text, private), path, replace=True)


def write_new_atomic(path: Path | str, text: str) -> bool:
    """Write `path` atomically only if it does not exist yet; False if it already did."""
    path = Path(path)
    return move_into_place(_synced_temp(path, text), path, replace=False)
