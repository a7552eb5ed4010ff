"""Collect a build spec's ``artifacts.files`` into ARTIFACTS_DIR after post_build.

:func:`plan_artifacts` decides which file goes where (plain data); :func:`copy_artifacts`
carries the plan out. The runner calls both. The files were written by the build (in a
build container, by code the platform does not trust): the copy opens each one through
the directories under the base without following a symbolic link, so a link the build
planted (to the platform's secrets key, say) is refused, not copied.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from stackyard.config.buildspec import Artifacts
from stackyard.errors import StackyardError


class ArtifactError(StackyardError):
    """The artifacts section cannot be collected: a pattern matched nothing, a bad path."""


def artifacts_base(artifacts: Artifacts, source_dir: Path) -> Path:
    """The directory ``artifacts.files`` are relative to (it must be inside the source)."""
    return _inside(source_dir, artifacts.base_directory or ".", "base-directory")


def plan_artifacts(artifacts: Artifacts, source_dir: Path) -> list[tuple[Path, PurePosixPath]]:
    """Each matched file with its path inside ARTIFACTS_DIR, in a stable order."""
    base = artifacts_base(artifacts, source_dir)
    if not base.is_dir():
        raise ArtifactError(f"artifacts base-directory {base} does not exist")
    plan: dict[Path, PurePosixPath] = {}
    for pattern in artifacts.files:
        found = _matches(base, pattern)
        if not found:
            raise ArtifactError(f"no file matches artifacts pattern {pattern!r} in {base}")
        for path in found:
            relative = PurePosixPath(path.relative_to(base).as_posix())
            plan[path] = PurePosixPath(relative.name) if artifacts.flatten else relative
    return sorted(plan.items(), key=lambda item: str(item[1]))


def copy_artifacts(plan: list[tuple[Path, PurePosixPath]], target: Path, base: Path) -> list[Path]:
    """Copy every planned file (under ``base``) into ``target``; return the copied paths.
    A file reached through a symbolic link, or that is not a regular file, is an
    ArtifactError."""
    copied = []
    for source, relative in plan:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        inside = PurePosixPath(source.relative_to(base).as_posix())
        with _open_inside(base, inside) as handle, destination.open("wb") as out:
            shutil.copyfileobj(handle, out)
            os.chmod(destination, stat.S_IMODE(os.fstat(handle.fileno()).st_mode) & 0o755)
        copied.append(destination)
    return copied


def _open_inside(base: Path, relative: PurePosixPath) -> BinaryIO:
    """Open ``base/relative`` for reading, one component at a time, following no link."""
    nofollow = os.O_RDONLY | os.O_NOFOLLOW
    directory = os.open(base, nofollow | os.O_DIRECTORY)
    try:
        for part in relative.parts[:-1]:
            inner = os.open(part, nofollow | os.O_DIRECTORY, dir_fd=directory)
            os.close(directory)
            directory = inner
        fd = os.open(relative.name, nofollow | os.O_NONBLOCK, dir_fd=directory)
    except OSError as exc:
        raise ArtifactError(
            f"artifact {relative} cannot be read: {exc.strerror} (Stackyard copies regular "
            "files, and follows no symbolic link)"
        ) from exc
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArtifactError(f"artifact {relative} is not a regular file")
    return os.fdopen(fd, "rb")


def _inside(root: Path, relative: str, what: str) -> Path:
    path = (root / relative).resolve()
    if PurePosixPath(relative).is_absolute() or not path.is_relative_to(root.resolve()):
        raise ArtifactError(f"artifacts {what} {relative!r} must be a path inside the source")
    return path


def _matches(base: Path, pattern: str) -> list[Path]:
    if PurePosixPath(pattern).is_absolute() or ".." in PurePosixPath(pattern).parts:
        raise ArtifactError(f"artifacts pattern {pattern!r} must be relative to the source")
    glob = f"{pattern}/*" if pattern.endswith("**") else pattern
    return sorted(path for path in base.glob(glob) if path.is_file())
