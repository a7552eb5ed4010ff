"""The `Source` seam: fetch a stack's repository, check out one commit, list changed paths.

The pipeline calls it before a build. `stackyard.source.git` is the built-in implementation,
and `FakeSource` (source/fake.py) keeps repositories in memory for unit tests; both keep
the contract in tests/source_contract.py. Implementations register under
``stackyard.sources``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import ClassVar

from stackyard.errors import UsageError, require

FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_STACK_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True)
class Commit:
    """One commit of a stack's repository, as resolved from a branch, tag or sha."""

    sha: str
    """The full hex object name (40 characters for SHA-1 repositories)."""
    subject: str
    """The first line of the commit message."""
    author: str
    """``Name <email>`` of the author."""
    committed_at: datetime
    """The committer date, timezone-aware."""


class Source(ABC):
    """Where a stack's code comes from.

    Every method takes the stack name, which names the stack's cache entry. `resolve`
    fetches; the other methods read what the last fetch brought in.
    """

    name: ClassVar[str]
    supports_head: ClassVar[bool] = False
    """Whether `head` can read a branch tip from the remote without fetching (polling)."""

    @abstractmethod
    def sync(self, stack: str, url: str) -> None:
        """Bring the stack's cached copy of ``url`` up to date (first time: create it)."""

    @abstractmethod
    def resolve(self, stack: str, url: str, ref: str | None, branch: str) -> Commit:
        """Sync, then resolve ``ref`` (branch, tag or sha), or ``branch``'s tip if None."""

    @abstractmethod
    def checkout(self, stack: str, sha: str, dest: Path, *, standalone: bool = False) -> Path:
        """Create a clean work tree of commit ``sha`` at ``dest`` and return it.

        ``standalone``: the work tree needs nothing outside ``dest`` (a build container
        mounts only it), so version control inside it still works there; without it, it
        may share the cache's data (a git worktree)."""

    @abstractmethod
    def remove_checkout(self, stack: str, dest: Path) -> None:
        """Delete a work tree made by `checkout`, and what the cache knew about it."""

    @abstractmethod
    def remove(self, stack: str) -> None:
        """Delete the stack's cached copy (the stack was deleted)."""

    @abstractmethod
    def read_file(self, stack: str, sha: str, path: str) -> bytes | None:
        """The bytes of ``path`` at commit ``sha``, or None if it is not a file there."""

    @abstractmethod
    def changed_paths(self, stack: str, old_sha: str | None, new_sha: str) -> list[str]:
        """Paths that differ between two commits; every path of ``new_sha`` if no old one."""

    def head(self, url: str, branch: str) -> str | None:
        """The sha ``branch`` points at in the remote ``url``, or None if it has no such branch.

        Asks the remote only (no fetch, no cache); the poller calls it. A source that
        cannot (``supports_head`` false) raises UnsupportedError saying what to do.
        """
        require(
            self,
            "head",
            needed_for="read a branch tip from a remote, which polling needs",
            hint="use a source that supports polling (the built-in 'git' one), or turn "
            "polling off with `stackyard stacks update STACK --poll 0`",
        )
        raise NotImplementedError(f"{type(self).__name__} declares supports_head but has no head")

    @contextmanager
    def workspace(
        self,
        stack: str,
        sha: str,
        parent: Path | None = None,
        *,
        standalone: bool = False,
        on_directory: Callable[[Path], object] | None = None,
    ) -> Iterator[Path]:
        """A checkout of ``sha`` in a fresh directory under ``parent``, removed on exit.

        ``on_directory`` gets the directory, made empty, before the checkout fills it (a
        build starts its build container, which mounts it, meanwhile)."""
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        label = "".join(ch for ch in f"{stack}-{sha[:12]}" if ch.isalnum() or ch == "-")
        holder = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=parent))
        dest = holder / "src"
        try:
            if on_directory is not None:
                dest.mkdir()
                on_directory(dest)
            yield self.checkout(stack, sha, dest, standalone=standalone)
        finally:
            try:
                if dest.exists():
                    self.remove_checkout(stack, dest)
            finally:
                shutil.rmtree(holder, ignore_errors=True)


def matches_paths(changed: Iterable[str], globs: Iterable[str]) -> bool:
    """True if any changed path matches any glob (the monorepo path filter).

    Paths and globs are relative to the repository root and split on ``/``. A ``**``
    segment matches zero or more whole segments; any other segment is an `fnmatch`
    pattern (``*``, ``?``, ``[abc]``) that never crosses a ``/``. A glob that matches a
    leading directory of a path matches the path too, so ``services/api`` means
    everything under it, as does ``services/api/`` or ``services/api/**``. Matching is
    case-sensitive. ``.`` is the repository root and matches every path; an empty list
    of globs matches nothing.
    """
    patterns = [_segments(glob) for glob in globs]
    return any(_matches(pattern, _segments(path)) for path in changed for pattern in patterns)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part not in ("", "."))


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        # The whole pattern matched the path or one of its leading directories.
        return True
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, path[skip:]) for skip in range(len(path) + 1))
    if not path:
        return False
    return fnmatchcase(path[0], head) and _matches(rest, path[1:])


# -- the seam's argument rules: every Source applies them before it touches anything ------


def check_stack_name(stack: str) -> None:
    """Stack names become cache directory names, so they must be plain."""
    if not _STACK_NAME.fullmatch(stack):
        raise UsageError(
            f"invalid stack name {stack!r}",
            hint="use lowercase letters, digits and '-', starting with a letter or digit",
        )


def check_ref_name(name: str, what: str) -> None:
    """A branch or ref name that cannot be taken for an option or split into two."""
    if not name or name.startswith("-") or any(ch.isspace() or ch == "\0" for ch in name):
        raise UsageError(f"invalid {what} {name!r}")


def check_sha(sha: str) -> None:
    """A full lowercase hex commit sha (SHA-1 or SHA-256)."""
    if not FULL_SHA.fullmatch(sha):
        raise UsageError(
            f"invalid commit sha {sha!r}", hint="give the full lowercase hex sha of a commit"
        )


def repo_relative(path: str) -> str:
    """``path`` inside the repository, normalised (``./a//b`` is ``a/b``); never outside it."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or path.startswith("/"):
        raise UsageError(f"invalid path {path!r}", hint="give a path relative to the repo root")
    return "/".join(parts)
