"""Where a config came from: the git commit of its tree, refusing uncommitted changes.

`git` runs with argv lists in the config's folder; nothing passes through a shell.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from generate.errors import InputError

DIRTY_TAG = "config-dirty"


@dataclass(frozen=True)
class ConfigVersion:
    commit: str
    dirty: bool


def git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise InputError(None, "git is not installed: pass --config-version SHA") from None


def config_version(config: Path, override: str | None, allow_dirty: bool) -> ConfigVersion:
    """The commit to record for `config`: `override`, else its repository's HEAD.

    A tree with uncommitted changes (untracked files included) is refused unless `allow_dirty`:
    its HEAD would not describe what is submitted.
    """
    folder = config.resolve().parent
    inside = git(folder, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        if override:
            return ConfigVersion(override, dirty=False)
        raise InputError(config, "not in a git repository: pass --config-version SHA to record where it came from")
    changes = git(folder, "status", "--porcelain").stdout.splitlines()
    if changes and not allow_dirty:
        example = changes[0][3:]
        raise InputError(
            config, f"git tree has uncommitted changes ({len(changes)}, e.g. {example}): commit them or pass --allow-dirty"
        )
    if override:
        return ConfigVersion(override, dirty=bool(changes))
    head = git(folder, "rev-parse", "HEAD")
    if head.returncode != 0:
        raise InputError(config, "its git repository has no commit yet: commit the config or pass --config-version SHA")
    return ConfigVersion(head.stdout.strip(), dirty=bool(changes))


def repo_path(path: Path) -> str:
    """`path` inside its git repository (`jobs/evaluation/eval.yml`), as `CONFIG_PATH_GIT_REPO`
    has it; outside git, the path as given."""
    top = git(path.resolve().parent, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path(top.stdout.strip()).resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def head_commit(path: Path) -> str | None:
    """The HEAD commit of `path`'s repository, if it is in one with a commit."""
    head = git(path.resolve().parent, "rev-parse", "HEAD")
    return head.stdout.strip() if head.returncode == 0 else None
