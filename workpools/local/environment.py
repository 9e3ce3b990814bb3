"""The submitter's environment, captured at `evalq submit` time (as task-spooler does).

Kept in a file of its own per job (mode 0600, in a 0700 folder), never in the flow run's
parameters: tokens live in environments, and Prefect shows parameters to anyone with the UI.
Values are never logged or printed; `evalq queue info` shows only how many there are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import uuid4

from generate.jsonio import write_atomic

ENV_FOLDER = "env"


class EnvironmentFileError(RuntimeError):
    """The captured environment is gone or unreadable."""


def capture_environment(home: Path, environ: dict[str, str] | None = None) -> Path:
    """Write the environment to a new private file under `home/env/`; its path."""
    folder = Path(home) / ENV_FOLDER
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = folder / f"{uuid4().hex}.json"
    write_atomic(path, json.dumps(dict(os.environ if environ is None else environ)), private=True)  # may hold tokens
    return path


def load_environment(path: Path | str) -> dict[str, str]:
    """The captured environment; the error names the file, never a value."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnvironmentFileError(f"the submitter's environment {path} is gone (cleared?)") from None
    except (OSError, ValueError) as exc:
        raise EnvironmentFileError(f"cannot read the submitter's environment {path}: {exc.__class__.__name__}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise EnvironmentFileError(f"{path} is not a JSON object of strings")
    return data


def count_variables(path: Path | str | None) -> int | None:
    """How many variables a captured environment holds (None if there is none to read)."""
    try:
        return len(load_environment(path)) if path else None
    except EnvironmentFileError:
        return None
