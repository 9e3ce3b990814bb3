"""TOKENS.yaml: user_id -> token, or a salted hash of it (`evalq grader hash-token`).

    alice: "a long random token"
    bob: "pbkdf2_sha256$200000$<salt hex>$<digest hex>"

Tokens are compared in constant time and never logged; no default credentials exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from generate.errors import InputError
from generate.jsonio import read_text

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 200_000


def hash_token(token: str, iterations: int = HASH_ITERATIONS, salt: str | None = None) -> str:
    """The salted hash of `token` to store in TOKENS.yaml instead of the token itself."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", token.encode(), bytes.fromhex(salt), iterations).hex()
    return f"{HASH_SCHEME}${iterations}${salt}${digest}"


def _matches(stored: str, token: str) -> bool:
    if stored.startswith(f"{HASH_SCHEME}$"):
        _, iterations, salt, digest = stored.split("$")
        candidate = hash_token(token, int(iterations), salt).rsplit("$", 1)[1]
        return hmac.compare_digest(candidate.encode(), digest.encode())
    return hmac.compare_digest(stored.encode(), token.encode())


@dataclass(frozen=True)
class TokenBook:
    """Who may submit as whom, and whose a token is."""

    entries: dict[str, str] = field(repr=False)

    def verify(self, user_id: str, token: str) -> bool:
        """True when `token` is `user_id`'s (unknown users never match)."""
        stored = self.entries.get(user_id)
        return stored is not None and _matches(stored, token)

    def owner_of(self, token: str) -> str | None:
        """The user whose token this is, or None (checks every entry, in constant time each)."""
        owner = None
        for user_id, stored in self.entries.items():
            if _matches(stored, token) and owner is None:
                owner = user_id
        return owner


def _check_entry(path: Path, user_id: object, stored: object) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise InputError(path, f"user id {user_id!r}: expected a non-empty string")
    if not isinstance(stored, str) or not stored:
        raise InputError(path, f"{user_id}: expected a token string or a {HASH_SCHEME} hash")
    if stored.startswith(f"{HASH_SCHEME}$"):
        parts = stored.split("$")
        try:
            ok = len(parts) == 4 and int(parts[1]) > 0 and bytes.fromhex(parts[2]) and bytes.fromhex(parts[3])
        except ValueError:
            ok = False
        if not ok:
            raise InputError(path, f"{user_id}: malformed {HASH_SCHEME} hash (expected {HASH_SCHEME}$ITERATIONS$SALT$DIGEST)")


def load_tokens(path: Path | str) -> TokenBook:
    """Read TOKENS.yaml; a missing, malformed or empty file raises `InputError` (values never shown)."""
    path = Path(path)
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(path, f"YAML does not parse{where}") from None
    if not isinstance(data, dict) or not data:
        raise InputError(path, "expected a mapping of user_id: token (at least one user)")
    for user_id, stored in data.items():
        _check_entry(path, user_id, stored)
    return TokenBook(dict(data))
