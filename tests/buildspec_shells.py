"""Where the buildspec tests run their commands: on this host, and in a build container.

Every buildspec test takes the ``shell_kind`` fixture's two values, so the same semantics
are checked against the runner on the host and against the containerised runner (the
real engine and the build image that scripts/setup-host builds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.buildspec.container import SOURCE_MOUNT, ContainerSettings, ContainerShell
from stackyard.buildspec.shell import CommandShell, LocalShell

KINDS = ["host", pytest.param("container", marks=pytest.mark.integration)]


def open_shell(kind: str, source: Path, artifacts: Path | None = None) -> CommandShell:
    """A shell of ``kind`` whose commands see ``source`` as their workdir's root."""
    if kind == "host":
        return LocalShell()
    if artifacts is not None:
        artifacts.mkdir(parents=True, exist_ok=True)
    return ContainerShell(ContainerSettings(source=source, artifacts=artifacts))


def workdir_seen(kind: str, source: Path) -> str:
    """The workdir as commands see it (CODEBUILD_SRC_DIR)."""
    return str(source.resolve()) if kind == "host" else str(SOURCE_MOUNT)
