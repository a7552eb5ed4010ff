"""The token ``stackyard login`` stored for each platform, in the user's config directory.

``$XDG_CONFIG_HOME/stackyard/credentials.json`` (else ``~/.config/stackyard/``), mode
0600, maps an API URL to the token used for it. The CLI's client reads it after
``STACKYARD_TOKEN`` and before the data directory's admin token file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stackyard.errors import UsageError


def credentials_file() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "stackyard" / "credentials.json"


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UsageError(
            f"{path}: mode is {oct(mode)}, but it holds tokens; only its owner may read it",
            hint=f"chmod 600 {path}",
        )
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(
            f"{path} is not JSON: {exc}", hint="log in again with `stackyard login`"
        ) from exc
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def stored_token(api_url: str, path: Path | None = None) -> str | None:
    return _read(path or credentials_file()).get(api_url.rstrip("/"))


def store_token(api_url: str, token: str | None, path: Path | None = None) -> Path:
    """Store (or, with None, forget) the token for ``api_url``; the file stays 0600."""
    path = path or credentials_file()
    tokens = _read(path)
    if token is None:
        tokens.pop(api_url.rstrip("/"), None)
    else:
        tokens[api_url.rstrip("/")] = token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(tokens, indent=2) + "\n")
    temporary.replace(path)
    return path
