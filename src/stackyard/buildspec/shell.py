"""Where a run's commands execute: the seam between the runner and a place to run them.

The runner (runner.py) decides every command, its script, environment and directory; a
:class:`CommandShell` only runs it and hands back its exit status and the state it
dumped. :class:`LocalShell` runs commands as processes of this host (``stackyard
buildspec run --on-host``); ``ContainerShell`` (container.py) runs them in a build
container, which is where builds and releases run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from stackyard.buildspec.process import (
    Account,
    Command,
    CommandOutcome,
    run_process,
    stop_leftover_group,
)
from stackyard.errors import ConfigError, UsageError

OutputCallback = Callable[[str], None]
# Stackyard's ``aws`` stand-in (and its answers, aws.d/): first on every run's PATH.
TOOLS_DIR = Path(__file__).resolve().with_name("tools")


class CommandShell(ABC):
    """A place where a run's commands execute, one at a time, each in its own session."""

    name: ClassVar[str]

    @abstractmethod
    def path_for(self, host_path: Path) -> str:
        """``host_path`` (the workdir, the artifacts directory) as commands see it."""

    @abstractmethod
    def shell_path(self, shell: str) -> str:
        """The path of ``sh`` or ``bash`` where commands run."""

    @abstractmethod
    def default_shell(self) -> str:
        """The shell of a spec that names none: ``bash`` where there is one (CodeBuild's
        /bin/sh is bash on its Amazon Linux images, which TinyStacks' specs were written
        for), else ``sh``."""

    @abstractmethod
    def tools_path(self) -> str:
        """The directory of Stackyard's ``aws`` stand-in, as commands see it: the run puts
        it first on PATH."""

    @abstractmethod
    def account(self, name: str) -> Account:
        """The run-as user ``name``; ConfigError when there is none, UsageError when this
        shell cannot switch users."""

    @abstractmethod
    def home(self) -> str:
        """HOME of the user commands run as when the spec names none."""

    @abstractmethod
    def state_file(self, account: Account | None) -> str:
        """Where the EXIT trap of a command run as ``account`` dumps its state."""

    @abstractmethod
    def run(self, command: Command, on_output: OutputCallback) -> CommandOutcome:
        """Run one command to its end (or its timeout), streaming its merged output."""

    @abstractmethod
    def stop_leftovers(self, groups: list[int]) -> list[int]:
        """SIGTERM the process groups of finished commands that still have processes
        (background ones); the groups that had some."""

    @property
    def docker_socket(self) -> Path | None:
        """The host side of the run's own Docker API, when it has one (a build container)."""
        return None

    def describe(self) -> str:
        """Where commands run, for the log's first line ("in a build container of ...")."""
        return self.name

    def hear(self, notice: Callable[[str], None] | None) -> None:  # noqa: B027 - optional
        """While a command runs, where the run's own Docker API says why a request of it
        waits (a local image name another run holds); None when it ends. Shells without
        such an API have nothing to say."""

    def close(self) -> None:  # noqa: B027 - optional: shells that hold something release it
        """Release what the shell holds (a state directory, a container)."""

    def __enter__(self) -> CommandShell:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalShell(CommandShell):
    """Commands as processes of this host, as the platform's own user (``--on-host``)."""

    name: ClassVar[str] = "on this host"

    def __init__(self) -> None:
        self._state_dir = Path(tempfile.mkdtemp(prefix="stackyard-buildspec-"))

    def path_for(self, host_path: Path) -> str:
        return str(host_path)

    def shell_path(self, shell: str) -> str:
        return shutil.which(shell, path="/usr/bin:/bin") or f"/bin/{shell}"

    def default_shell(self) -> str:
        return "bash" if shutil.which("bash", path="/usr/bin:/bin") else "sh"

    def tools_path(self) -> str:
        return str(TOOLS_DIR)

    def account(self, name: str) -> Account:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(
                f"run-as: there is no Linux user named '{name}' on this machine",
                hint="create the user, or change run-as in the build spec",
            ) from None
        if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
            raise UsageError(f"run-as '{name}' needs Stackyard to run as root")
        return Account(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def home(self) -> str:
        return str(Path.home())

    def state_file(self, account: Account | None) -> str:
        return str(self._state_dir / "state")

    def run(self, command: Command, on_output: OutputCallback) -> CommandOutcome:
        self._prepare_state_dir(command.account)
        outcome = run_process(command, on_output)
        state_file = self._state_dir / "state"
        try:
            state = state_file.read_bytes()
            exports = state_file.with_name("state.x").read_text("utf-8", "replace")
        except FileNotFoundError:
            return outcome
        return replace(outcome, state=state, exports=exports)

    def stop_leftovers(self, groups: list[int]) -> list[int]:
        return [group for group in groups if stop_leftover_group(group)]

    def close(self) -> None:
        shutil.rmtree(self._state_dir, ignore_errors=True)

    def _prepare_state_dir(self, account: Account | None) -> None:
        for leftover in self._state_dir.iterdir():
            leftover.unlink()
        uid = account.uid if account else os.geteuid()
        gid = account.gid if account else os.getegid()
        os.chown(self._state_dir, uid, gid)
