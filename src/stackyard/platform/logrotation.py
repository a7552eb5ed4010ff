"""Logs that one process keeps appending to: rotated by size, a few generations kept.

The process logs (``platform.log``, ``dataplane.log``, ``registry.log``, ``caddy-N.log``)
grow for as long as the platform runs (add a ``GrowingLog`` for another such log). The
routes' access logs (``run/caddy-N-access/``) and Caddy's certificate log
(``run/caddy-N-acme.log``) are not here: Caddy writes them with its own rolling file writer.
Each is rotated by copy and truncate (``x.log`` → ``x.log.1`` → ``x.log.2`` …): the writer
keeps its file open in append mode and simply goes on at the start of the emptied file.
Records' own logs (one file per build, run, release, deployment) are not rotated:
retention removes those beyond the last N (pipeline/retention).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class GrowingLog:
    pattern: str  # a glob relative to the logs directory
    max_bytes: int = 10 * MIB
    keep: int = 3  # rotated generations kept besides the live file


GROWING_LOGS = (
    GrowingLog("platform.log"),
    GrowingLog("dataplane.log"),
    GrowingLog("registry.log"),
    GrowingLog("caddy-*.log"),
)


@dataclass(frozen=True)
class Rotation:
    path: str
    keep: int


def plan_rotations(sizes: Mapping[str, int], logs: tuple[GrowingLog, ...]) -> list[Rotation]:
    """The files (path → size, matched by each log's pattern by the caller) that are due."""
    due = []
    for log in logs:
        for path, size in sorted(sizes.items()):
            if Path(path).match(log.pattern) and size > log.max_bytes:
                due.append(Rotation(path, log.keep))
    return due


def growing_files(logs_dir: Path, logs: tuple[GrowingLog, ...] = GROWING_LOGS) -> dict[str, int]:
    """Every live file matching a pattern, with its size."""
    found = {}
    for log in logs:
        for path in logs_dir.glob(log.pattern):
            if path.is_file():
                found[str(path)] = path.stat().st_size
    return found


def rotate(rotation: Rotation) -> None:
    """Shift ``path.1`` … ``path.(keep-1)`` up one, copy ``path`` to ``path.1``, empty it."""
    path = Path(rotation.path)
    for generation in range(rotation.keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{generation}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{generation + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as handle:
        handle.truncate(0)
