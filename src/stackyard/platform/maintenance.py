"""One lock between the platform's registry maintenance and a backup.

Retention (manifest deletions, then garbage collection) and ``stackyard backup`` (which
copies the registry's links, then its blobs) must not overlap: a collection between the
two copies could remove a blob a copied link names. Both take an exclusive ``flock`` on
``<data dir>/run/registry.lock``; they may run in different processes.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stackyard.errors import RetryableError


def lock_path(data_dir: Path) -> Path:
    return data_dir / "run" / "registry.lock"


@contextmanager
def registry_maintenance(data_dir: Path, *, who: str, wait: float = 600.0) -> Iterator[None]:
    """Hold the registry maintenance lock; wait up to ``wait`` seconds for it."""
    path = lock_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RetryableError(
                        f"{who}: the registry is busy with a backup or a garbage collection "
                        f"(lock {path}) for more than {wait:.0f} s",
                        hint="try again when it has finished",
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
