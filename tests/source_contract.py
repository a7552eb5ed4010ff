"""The Source contract, checked against every implementation (FakeSource and git).

A test module subclasses ``SourceContract`` and provides a ``source`` fixture and an
``upstream`` fixture: a remote repository the test can commit to, whose branch ``main``
already holds one commit ("First commit": README.md and services/api/main.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import pytest

from stackyard.errors import NotFoundError, PermanentError, UnsupportedError, UsageError
from stackyard.source.base import Source

FIRST_FILES = {"README.md": "one\n", "services/api/main.py": "v1\n"}


class Upstream(Protocol):
    """A remote repository of the implementation under test."""

    url: str

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        """Commit on main: each file gets its text, or is deleted for None; the new sha."""

    def tag(self, name: str, sha: str) -> None: ...

    def branch(self, name: str) -> None:
        """A new branch at main's tip."""

    def delete_branch(self, name: str) -> None: ...

    def tip(self) -> str:
        """The sha main points at."""


class SourceContract:
    """Behaviour every Source must have; subclasses supply ``source`` and ``upstream``."""

    # -- resolve

    def test_resolve_a_branch_fetches_and_returns_its_tip(
        self, source: Source, upstream: Upstream
    ) -> None:
        found = source.resolve("web", upstream.url, None, "main")
        assert found.sha == upstream.tip()
        assert found.subject == "First commit"
        assert found.author == "Ada Lovelace <ada@example.com>"
        assert found.committed_at.tzinfo is not None

    def test_a_later_resolve_sees_new_commits(self, source: Source, upstream: Upstream) -> None:
        first = source.resolve("web", upstream.url, None, "main").sha
        second = upstream.commit({"README.md": "two\n"}, "Second commit")
        found = source.resolve("web", upstream.url, None, "main")
        assert (found.sha, found.subject) == (second, "Second commit")
        assert source.resolve("web", upstream.url, first, "main").sha == first

    def test_resolve_a_tag_a_full_sha_and_a_short_sha_in_any_case(
        self, source: Source, upstream: Upstream
    ) -> None:
        first = upstream.tip()
        upstream.tag("v1", first)
        upstream.commit({"README.md": "two\n"}, "Second commit")
        for ref in ("v1", first, first[:7], first[:10].upper()):
            assert source.resolve("web", upstream.url, ref, "main").sha == first

    def test_an_unknown_branch_is_not_found_and_lists_the_branches(
        self, source: Source, upstream: Upstream
    ) -> None:
        upstream.branch("feature")
        with pytest.raises(NotFoundError, match="'develop'") as caught:
            source.resolve("web", upstream.url, None, "develop")
        assert "feature, main" in str(caught.value)
        assert caught.value.retryable is False

    def test_an_unknown_ref_is_not_found(self, source: Source, upstream: Upstream) -> None:
        with pytest.raises(NotFoundError, match="'deadbeef'"):
            source.resolve("web", upstream.url, "deadbeef", "main")
        with pytest.raises(NotFoundError):
            source.resolve("web", upstream.url, "no-such-tag", "main")

    def test_a_deleted_branch_is_gone_after_the_next_fetch(
        self, source: Source, upstream: Upstream
    ) -> None:
        upstream.branch("feature")
        assert source.resolve("web", upstream.url, None, "feature").sha == upstream.tip()
        upstream.delete_branch("feature")
        with pytest.raises(NotFoundError, match="'feature'"):
            source.resolve("web", upstream.url, None, "feature")

    def test_a_repository_that_cannot_be_fetched_is_a_permanent_error(
        self, source: Source, tmp_path: Path
    ) -> None:
        with pytest.raises(PermanentError) as caught:
            source.resolve("web", str(tmp_path / "no-such-repo"), None, "main")
        assert caught.value.retryable is False

    def test_bad_names_are_usage_errors(self, source: Source, upstream: Upstream) -> None:
        for stack in ("Web", "../web", "-web", ""):
            with pytest.raises(UsageError):
                source.sync(stack, upstream.url)
        with pytest.raises(UsageError):
            source.resolve("web", upstream.url, "--all", "main")
        with pytest.raises(UsageError):
            source.resolve("web", upstream.url, None, "-x")

    # -- reading a commit

    def test_read_file_at_a_commit(self, source: Source, upstream: Upstream) -> None:
        first = source.resolve("web", upstream.url, None, "main").sha
        upstream.commit({"README.md": "two\n", "stackyard.yml": "stages: []\n"}, "Second")
        second = source.resolve("web", upstream.url, None, "main").sha
        assert source.read_file("web", first, "README.md") == b"one\n"
        assert source.read_file("web", second, "./README.md") == b"two\n"
        assert source.read_file("web", first, "stackyard.yml") is None
        assert source.read_file("web", second, "stackyard.yml") == b"stages: []\n"
        assert source.read_file("web", second, "services") is None  # a directory

    def test_read_file_refuses_what_is_not_a_path_or_a_sha(
        self, source: Source, upstream: Upstream
    ) -> None:
        sha = source.resolve("web", upstream.url, None, "main").sha
        with pytest.raises(UsageError):
            source.read_file("web", sha, "../etc/passwd")
        with pytest.raises(UsageError):
            source.read_file("web", "HEAD", "README.md")
        with pytest.raises(NotFoundError):
            source.read_file("web", "1" * 40, "README.md")
        with pytest.raises(NotFoundError, match="cache"):
            source.read_file("api", sha, "README.md")  # that stack never fetched

    def test_changed_paths_between_two_commits_and_from_nothing(
        self, source: Source, upstream: Upstream
    ) -> None:
        first = source.resolve("web", upstream.url, None, "main").sha
        upstream.commit(
            {"services/api/main.py": "v2\n", "docs/a.md": "a\n", "README.md": None}, "Second"
        )
        second = source.resolve("web", upstream.url, None, "main").sha
        assert source.changed_paths("web", first, second) == [
            "README.md",
            "docs/a.md",
            "services/api/main.py",
        ]
        assert source.changed_paths("web", None, first) == sorted(FIRST_FILES)
        assert source.changed_paths("web", "2" * 40, second) == [
            "docs/a.md",
            "services/api/main.py",
        ]  # an old sha the cache does not know: every path of the new commit

    # -- check out

    def test_checkout_writes_the_tree_and_remove_checkout_deletes_it(
        self, source: Source, upstream: Upstream, tmp_path: Path
    ) -> None:
        sha = source.resolve("web", upstream.url, None, "main").sha
        dest = tmp_path / "out" / "web"
        tree = source.checkout("web", sha, dest)
        assert tree == dest.absolute()
        for name, text in FIRST_FILES.items():
            assert (tree / name).read_text() == text
        source.remove_checkout("web", tree)
        assert not dest.exists()

    def test_checkout_into_a_directory_that_is_not_empty_is_refused(
        self, source: Source, upstream: Upstream, tmp_path: Path
    ) -> None:
        sha = source.resolve("web", upstream.url, None, "main").sha
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "x").write_text("x")
        with pytest.raises(UsageError, match="not empty"):
            source.checkout("web", sha, tmp_path / "busy")

    def test_workspace_is_a_checkout_that_goes_away(
        self, source: Source, upstream: Upstream, tmp_path: Path
    ) -> None:
        sha = source.resolve("web", upstream.url, None, "main").sha
        with source.workspace("web", sha, parent=tmp_path / "ws") as tree:
            assert (tree / "README.md").read_text() == "one\n"
        assert not tree.exists()
        assert list((tmp_path / "ws").iterdir()) == []

    def test_remove_drops_the_cache(self, source: Source, upstream: Upstream) -> None:
        sha = source.resolve("web", upstream.url, None, "main").sha
        source.remove("web")
        with pytest.raises(NotFoundError, match="cache"):
            source.read_file("web", sha, "README.md")
        source.remove("web")  # twice is fine
        assert source.resolve("web", upstream.url, sha, "main").sha == sha  # fetched again

    # -- polling

    def test_head_reads_a_branch_tip_without_a_cache(
        self, source: Source, upstream: Upstream
    ) -> None:
        if not source.supports_head:
            with pytest.raises(UnsupportedError, match="polling"):
                source.head(upstream.url, "main")
            return
        assert source.head(upstream.url, "main") == upstream.tip()
        assert source.head(upstream.url, "develop") is None
        newer = upstream.commit({"README.md": "two\n"}, "Second commit")
        assert source.head(upstream.url, "main") == newer
