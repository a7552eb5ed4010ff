"""Token text: how a token looks, how it is hashed for storage, and how logs mask it.

A token is ``sy_<id>_<secret>``: ``id`` is 10 hex characters, public (lists, the audit
log and revocation name it), and ``secret`` is 32 random bytes (``token_urlsafe``). The
store keeps only ``HMAC-SHA256(pepper, token)``; the pepper is 32 random bytes in the
data directory (``token-pepper``, mode 0600), never in the database, so a copy of the
database alone cannot be used to check guesses. A keyed hash, not bcrypt: the token has
256 bits of entropy, so a slow hash protects nothing and would cost every request
(docs/decisions.md, "People, roles and tokens").

The bootstrap admin token made by earlier versions (``admin-token``, no ``sy_`` prefix)
keeps working: it is found by its hash instead of by its id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from stackyard.secrets.files import read_private, write_private

PREFIX = "sy_"
ID_LENGTH = 10
PATTERN = re.compile(r"sy_[0-9a-f]{10}_[A-Za-z0-9_-]{16,}")
MASK = "sy_***"


@dataclass(frozen=True)
class NewToken:
    """A token just made: its id and the text, shown once and never stored."""

    id: str
    text: str


def make_token() -> NewToken:
    token_id = secrets.token_hex(ID_LENGTH // 2)
    return NewToken(token_id, f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}")


def token_id_of(text: str) -> str | None:
    """The public id of a ``sy_`` token; None for any other text (a legacy token)."""
    if text.startswith(PREFIX) and len(text) > len(PREFIX) + ID_LENGTH + 1:
        token_id = text[len(PREFIX) : len(PREFIX) + ID_LENGTH]
        if text[len(PREFIX) + ID_LENGTH] == "_" and all(c in "0123456789abcdef" for c in token_id):
            return token_id
    return None


class TokenHasher:
    """HMAC-SHA256 under the platform's pepper, read (or made) on first use."""

    def __init__(self, pepper: Callable[[], bytes]) -> None:
        self._load = pepper
        self._pepper: bytes | None = None

    def digest(self, text: str) -> str:
        if self._pepper is None:
            self._pepper = self._load()
        return hmac.new(self._pepper, text.encode(), hashlib.sha256).hexdigest()

    def matches(self, text: str, stored: str) -> bool:
        """Constant time, whatever the two have in common."""
        return hmac.compare_digest(self.digest(text).encode(), stored.encode())


def pepper_file(path: Path) -> bytes:
    """The pepper at ``path``, made on first use (mode 0600). Losing it makes every
    token unusable: back it up with the database."""
    if not path.exists():
        write_private(path, secrets.token_hex(32) + "\n")
    return bytes.fromhex(read_private(path).strip())


def mask_tokens(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every ``sy_`` token, and each of ``extra`` (the legacy admin token),
    replaced by a mask."""
    masked = PATTERN.sub(MASK, text)
    for value in extra:
        if value:
            masked = masked.replace(value, MASK)
    return masked


class TokenMaskFilter(logging.Filter):
    """A logging filter that masks tokens in every record it passes (the API server puts
    it on the handlers of the platform's log)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        super().__init__()
        self._extra = tuple(value for value in extra if value)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_tokens(message, self._extra)
        if masked != message:
            record.msg, record.args = masked, None
        return True
