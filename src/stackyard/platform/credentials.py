"""Secret files the platform makes at first start: the admin token, registry credentials.

Each is created with mode 0600 and never rewritten, so a restart keeps the same token.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from stackyard.errors import ComponentError
from stackyard.registry_login import RegistryLogin
from stackyard.secrets.files import read_private, write_private


def ensure_token(path: Path) -> str:
    """The admin token at ``path``, made on first use (mode 0600)."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32) + "\n")
    return read_private(path)


def read_token(path: Path) -> str:
    if not path.exists():
        raise ComponentError(
            f"no token: you are not logged in, and there is no admin token at {path}",
            hint="log in with `stackyard login` (your token from `stackyard users add`), "
            "or set STACKYARD_TOKEN",
            retryable=False,
        )
    return read_private(path)


def ensure_registry_login(path: Path, registry: str) -> RegistryLogin:
    """The login of the managed registry at ``registry``, made on first use (mode 0600)."""
    if not path.exists():
        record = {"username": "stackyard", "password": secrets.token_urlsafe(24)}
        write_private(path, json.dumps(record) + "\n")
    record = json.loads(read_private(path))
    return RegistryLogin(registry, record["username"], record["password"])


# TinyStacks' specs log in as `docker login -u AWS -p $(aws ecr get-login-password)`: the
# registry takes its password under this user name too (the password is the secret).
ECR_USERNAME = "AWS"


def has_ecr_username(path: Path) -> bool:
    """Whether the htpasswd file at ``path`` has the ``AWS`` entry (older ones do not)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return any(line.startswith(f"{ECR_USERNAME}:") for line in lines)


def write_htpasswd(path: Path, credentials: RegistryLogin) -> None:
    """The htpasswd file (bcrypt, as CNCF distribution requires) for the registry: its
    user, and ``AWS`` with the same password for TinyStacks' ``docker login -u AWS``."""
    # The registry checks the hash on every request; the password is 24 random bytes, so a
    # low cost keeps pushes fast without making the hash guessable.
    import bcrypt  # here, not at the top: every CLI command reads the token file

    hashed = bcrypt.hashpw(credentials.password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    users = dict.fromkeys((credentials.username, ECR_USERNAME))
    tmp.write_text("".join(f"{user}:{hashed}\n" for user in users), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
