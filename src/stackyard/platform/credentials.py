"""Secret files the platform makes at first start: the admin token, registry credentials.

Each is created with mode 0600 and never rewritten, so a restart keeps the same token.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from stackyard.errors import ComponentError


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first; theirs wins, and we read it back
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)


def _read_private(path: Path) -> str:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ComponentError(
                f"{path}: mode is {oct(mode)}, but it holds a secret; only its owner may read it",
                hint=f"chmod 600 {path}",
            )
        return path.read_text(encoding="utf-8").strip()
    except PermissionError as exc:
        raise ComponentError(f"{path}: cannot be read: {exc}", hint="run as its owner") from exc


def ensure_token(path: Path) -> str:
    """The admin token at ``path``, made on first use (mode 0600)."""
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32) + "\n")
    return _read_private(path)


def read_token(path: Path) -> str:
    if not path.exists():
        raise ComponentError(
            f"no admin token at {path}",
            hint="start the platform with `stackyard up`, or set STACKYARD_TOKEN",
        )
    return _read_private(path)


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: str


def ensure_registry_credentials(path: Path) -> RegistryCredentials:
    """Credentials of the managed registry, made on first use (mode 0600)."""
    if not path.exists():
        record = {"username": "stackyard", "password": secrets.token_urlsafe(24)}
        _write_private(path, json.dumps(record) + "\n")
    record = json.loads(_read_private(path))
    return RegistryCredentials(record["username"], record["password"])


def write_htpasswd(path: Path, credentials: RegistryCredentials) -> None:
    """The htpasswd file (bcrypt, as CNCF distribution requires) for the registry."""
    # The registry checks the hash on every request; the password is 24 random bytes, so a
    # low cost keeps pushes fast without making the hash guessable.
    import bcrypt  # here, not at the top: every CLI command reads the token file

    hashed = bcrypt.hashpw(credentials.password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{credentials.username}:{hashed}\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
