"""Collect a build spec's ``artifacts.files`` into ARTIFACTS_DIR after post_build.

:func:`plan_artifacts` decides which file goes where (plain data); :func:`copy_artifacts`
carries the plan out. The runner calls both.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from stackyard.config.buildspec import Artifacts
from stackyard.errors import StackyardError


class ArtifactError(StackyardError):
    """The artifacts section cannot be collected: a pattern matched nothing, a bad path."""


def plan_artifacts(artifacts: Artifacts, source_dir: Path) -> list[tuple[Path, PurePosixPath]]:
    """Each matched file with its path inside ARTIFACTS_DIR, in a stable order."""
    base = _inside(source_dir, artifacts.base_directory or ".", "base-directory")
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


def copy_artifacts(plan: list[tuple[Path, PurePosixPath]], target: Path) -> list[Path]:
    """Copy every planned file into ``target``; return the copied paths."""
    copied = []
    for source, relative in plan:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
        copied.append(destination)
    return copied


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
