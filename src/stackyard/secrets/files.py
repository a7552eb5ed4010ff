"""Files that hold a secret: written once with mode 0600, refused when others can read them.

The platform's admin token and registry credentials (platform/credentials.py) and the key
that encrypts secrets at rest (vault.py) live in such files in the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from stackyard.errors import ComponentError


def write_private(path: Path, content: str) -> None:
    """Create ``path`` (mode 0600) with ``content``; an existing file is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first; theirs wins, and we read it back
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)


def read_private(path: Path) -> str:
    """The stripped text of ``path``; ComponentError when others may read it, or we may not."""
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
