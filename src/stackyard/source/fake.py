"""An in-memory Source for unit tests: remote repositories and stack caches in dicts.

It keeps the Source contract (tests/source_contract.py) as GitSource does. A test makes
commits in a remote with ``commit`` (and ``tag``, ``delete_branch``); a stack sees them
after its next ``sync``, as with a real fetch.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from stackyard.errors import NotFoundError, PermanentError, UsageError
from stackyard.source.base import (
    FULL_SHA,
    Commit,
    Source,
    check_ref_name,
    check_sha,
    check_stack_name,
    repo_relative,
)

AUTHOR = "Ada Lovelace <ada@example.com>"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FakeCommit:
    """A commit and the whole tree it records."""

    commit: Commit
    files: Mapping[str, bytes]


@dataclass
class FakeRepository:
    """A remote repository, or a stack's cached copy of one."""

    commits: dict[str, FakeCommit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def copy(self) -> FakeRepository:
        return FakeRepository(dict(self.commits), dict(self.branches), dict(self.tags))


class FakeSource(Source):
    """Remote repositories by URL; each stack has a cache that ``sync`` refreshes."""

    name: ClassVar[str] = "fake"
    supports_head: ClassVar[bool] = True

    def __init__(self) -> None:
        self.remotes: dict[str, FakeRepository] = {}
        self.caches: dict[str, FakeRepository] = {}
        self.syncs: list[tuple[str, str]] = []  # (stack, url) of every fetch, for tests

    # -- test controls

    def commit(
        self,
        url: str,
        files: Mapping[str, str | None],
        *,
        branch: str = "main",
        message: str = "a commit",
    ) -> str:
        """Commit on ``branch`` of the remote ``url``: ``files`` change (None deletes one)."""
        remote = self.remotes.setdefault(url, FakeRepository())
        parent = remote.branches.get(branch)
        tree = dict(remote.commits[parent].files) if parent else {}
        for path, text in files.items():
            if text is None:
                tree.pop(repo_relative(path), None)
            else:
                tree[repo_relative(path)] = text.encode()
        number = len(remote.commits) + 1
        sha = hashlib.sha1(  # noqa: S324 - a name for a fake commit, as git's, not security
            f"{url}\0{parent}\0{message}\0{sorted(tree.items())}\0{number}".encode()
        ).hexdigest()
        when = EPOCH + timedelta(minutes=number)
        remote.commits[sha] = FakeCommit(Commit(sha, message, AUTHOR, when), tree)
        remote.branches[branch] = sha
        return sha

    def tag(self, url: str, name: str, sha: str) -> None:
        self.remotes[url].tags[name] = sha

    def delete_branch(self, url: str, branch: str) -> None:
        del self.remotes[url].branches[branch]

    # -- the seam

    def sync(self, stack: str, url: str) -> None:
        check_stack_name(stack)
        remote = self._remote(url)
        self.syncs.append((stack, url))
        self.caches[stack] = remote.copy()

    def resolve(self, stack: str, url: str, ref: str | None, branch: str) -> Commit:
        check_stack_name(stack)
        cached = self.caches.get(stack)
        if ref is not None and FULL_SHA.fullmatch(ref) and cached and ref in cached.commits:
            return cached.commits[ref].commit
        self.sync(stack, url)
        repository = self.caches[stack]
        if ref is None:
            check_ref_name(branch, "branch")
            sha = repository.branches.get(branch)
            if sha is None:
                names = sorted(repository.branches)
                raise NotFoundError(
                    f"branch {branch!r} not found in {url}; branches: "
                    + (", ".join(names) if names else "none (the repository is empty)"),
                    hint="push the branch, or set the stack's branch to one of these",
                )
            return repository.commits[sha].commit
        check_ref_name(ref, "ref")
        sha = repository.branches.get(ref) or repository.tags.get(ref) or _short(repository, ref)
        if sha is None:
            raise NotFoundError(
                f"no branch, tag or commit {ref!r} in {url}",
                hint="check the name or sha; a commit must be reachable from a branch or tag",
            )
        return repository.commits[sha].commit

    def checkout(self, stack: str, sha: str, dest: Path, *, standalone: bool = False) -> Path:
        files = self._commit(stack, sha).files
        if dest.exists() and any(dest.iterdir()):
            raise UsageError(f"cannot check out {sha[:12]} into {dest}: it is not empty")
        dest = dest.absolute()
        dest.mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return dest

    def remove_checkout(self, stack: str, dest: Path) -> None:
        shutil.rmtree(dest)

    def remove(self, stack: str) -> None:
        check_stack_name(stack)
        self.caches.pop(stack, None)

    def read_file(self, stack: str, sha: str, path: str) -> bytes | None:
        self._cached(stack)
        check_sha(sha)
        return self._commit(stack, sha).files.get(repo_relative(path))

    def changed_paths(self, stack: str, old_sha: str | None, new_sha: str) -> list[str]:
        new = self._commit(stack, new_sha).files
        if old_sha is not None:
            check_sha(old_sha)
        old = self._cached(stack).commits.get(old_sha or "")
        if old is None:
            return sorted(new)
        return sorted(
            path for path in new.keys() | old.files.keys() if new.get(path) != old.files.get(path)
        )

    def head(self, url: str, branch: str) -> str | None:
        check_ref_name(branch, "branch")
        return self._remote(url).branches.get(branch)

    # -- helpers

    def _remote(self, url: str) -> FakeRepository:
        if url not in self.remotes:
            raise PermanentError(
                f"cannot fetch {url}: no such repository",
                hint="check the stack's repository URL, and that this host can read it",
            )
        return self.remotes[url]

    def _cached(self, stack: str) -> FakeRepository:
        check_stack_name(stack)
        if stack not in self.caches:
            raise NotFoundError(
                f"stack {stack!r} has no repository cache",
                hint="resolve a commit first: that fetches the repository",
            )
        return self.caches[stack]

    def _commit(self, stack: str, sha: str) -> FakeCommit:
        cached = self._cached(stack)
        check_sha(sha)
        if sha not in cached.commits:
            raise NotFoundError(
                f"commit {sha} is not in the repository cache of stack {stack!r}",
                hint="resolve it first; a commit must be reachable from a branch or tag",
            )
        return cached.commits[sha]


def _short(repository: FakeRepository, ref: str) -> str | None:
    """The one commit whose sha starts with ``ref`` (4+ hex digits, any case), or None."""
    if not (4 <= len(ref) <= 64 and all(ch in "0123456789abcdefABCDEF" for ch in ref)):
        return None
    found = [sha for sha in repository.commits if sha.startswith(ref.lower())]
    if len(found) > 1:
        raise UsageError(
            f"the short sha {ref!r} matches more than one object",
            hint="give more hex digits of the commit",
        )
    return found[0] if found else None
