"""How many bytes each part of the data directory takes, and how full its disk is.

Retention reports these before and after it runs; ``stackyard doctor`` and the console
show them. Sizes are the files' own sizes (what ``du --apparent-size`` counts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RETENTION_REPORT = "retention.json"
"""The last retention run's report, in the data directory (pipeline/retention writes it)."""

PARTS = {
    "registry": ("registry",),
    "logs": ("logs",),
    "database": ("stackyard.db", "stackyard.db-wal", "stackyard.db-shm"),
    "git": ("remotes", "git"),
    "work": ("work",),
}
"""Each reported part and the entries of the data directory it adds up."""


@dataclass(frozen=True)
class FilesystemUse:
    total: int
    free: int  # for an unprivileged user

    @property
    def used_fraction(self) -> float:
        return 0.0 if self.total == 0 else 1.0 - self.free / self.total


def tree_bytes(path: Path) -> int:
    """The size of a file, or of every file under a folder (links not followed)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size if path.exists() else 0
    except OSError:
        return 0
    total = 0
    for folder, _subfolders, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except OSError:
                continue  # removed while counting
    return total


def data_dir_use(data_dir: Path) -> dict[str, int]:
    """Bytes per part of the data directory (see PARTS)."""
    return {
        part: sum(tree_bytes(data_dir / entry) for entry in entries)
        for part, entries in PARTS.items()
    }


def filesystem_use(path: Path) -> FilesystemUse:
    stats = os.statvfs(path)
    return FilesystemUse(
        total=stats.f_blocks * stats.f_frsize, free=stats.f_bavail * stats.f_frsize
    )


def human_bytes(size: int) -> str:
    """``512B``, ``1.5kB``, ``2.3GB``: decimal units, as docker and du -h --si show them."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}TB"
