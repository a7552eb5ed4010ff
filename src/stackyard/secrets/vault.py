"""Encryption of secret values at rest: Fernet (AES-128-CBC + HMAC-SHA256) with one key.

The variable service encrypts a value before it reaches the store and decrypts it only
when a build, release or task needs it. The key lives in a file outside the database;
``Vault`` asks its loader for it on first use, so a stack without secrets never needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from threading import Lock

from cryptography.fernet import Fernet, InvalidToken

from stackyard.errors import PermanentError
from stackyard.secrets.files import read_private, write_private


class SecretDecryptionError(PermanentError):
    """A stored secret cannot be decrypted with this key (the key file was replaced)."""


class Vault:
    """Encrypt and decrypt secret values with the key ``load_key`` returns (loaded once)."""

    def __init__(self, load_key: Callable[[], bytes]) -> None:
        self._load_key = load_key
        self._fernet: Fernet | None = None
        self._lock = Lock()

    def encrypt(self, value: str) -> str:
        return self._cipher().encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, *, what: str = "a secret") -> str:
        try:
            return self._cipher().decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise SecretDecryptionError(
                f"cannot decrypt {what}: the secrets key does not match the one it was "
                "encrypted with",
                hint="restore the data directory's original secrets.key, or set the secret again",
            ) from exc

    def _cipher(self) -> Fernet:
        with self._lock:
            if self._fernet is None:
                self._fernet = Fernet(self._load_key())
            return self._fernet


def new_key() -> bytes:
    """A fresh random key, in the form ``Vault`` loaders return."""
    return Fernet.generate_key()


def key_file(path: Path) -> bytes:
    """The key at ``path``, made on first use (mode 0600, outside the database)."""
    if not path.exists():
        write_private(path, new_key().decode("ascii") + "\n")
    return read_private(path).encode("ascii")
