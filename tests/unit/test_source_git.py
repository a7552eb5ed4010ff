"""GitSource against real git repositories made in tmp_path (git is a local tool, not faked)."""

from __future__ import annotations

import subprocess
import threading
from datetime import datetime
from pathlib import Path

import pytest

from stackyard.errors import (
    ComponentError,
    NotFoundError,
    PermanentError,
    RetryableError,
    UsageError,
)
from stackyard.source.base import Commit, Source, matches_paths
from stackyard.source.git import GitSource, git_env, normalise_url, redact_url

IDENTITY = ["-c", "user.name=Ada Lovelace", "-c", "user.email=ada@example.com"]


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *IDENTITY, *args],
        cwd=cwd,
        env=git_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"README.md": "one\n", "services/api/main.py": "v1\n"}, "First commit")
    return repo


@pytest.fixture
def source(tmp_path: Path) -> GitSource:
    return GitSource(tmp_path / "cache")


def test_git_source_is_a_source(source: GitSource) -> None:
    assert isinstance(source, Source)
    assert GitSource.name == "git"


def test_resolve_branch_syncs_and_returns_the_tip(source: GitSource, upstream: Path) -> None:
    sha = git(upstream, "rev-parse", "HEAD")

    found = source.resolve("web", str(upstream), None, "main")

    assert found == Commit(
        sha=sha,
        subject="First commit",
        author="Ada Lovelace <ada@example.com>",
        committed_at=found.committed_at,
    )
    assert isinstance(found.committed_at, datetime)
    assert found.committed_at.tzinfo is not None
    assert (source.cache_dir / "web.git").is_dir()
    assert source.branches("web") == ["main"]


def test_resolve_short_sha_tag_and_full_sha(source: GitSource, upstream: Path) -> None:
    first = git(upstream, "rev-parse", "HEAD")
    git(upstream, "tag", "-a", "v1", "-m", "release one")
    commit(upstream, {"README.md": "two\n"}, "Second")

    assert source.resolve("web", str(upstream), first[:7], "main").sha == first
    assert source.resolve("web", str(upstream), first.upper()[:10], "main").sha == first
    assert source.resolve("web", str(upstream), first, "main").sha == first
    assert source.resolve("web", str(upstream), "v1", "main").sha == first


def test_unknown_branch_lists_the_branches(source: GitSource, upstream: Path) -> None:
    git(upstream, "branch", "release")

    with pytest.raises(NotFoundError) as caught:
        source.resolve("web", str(upstream), None, "develop")

    message = str(caught.value)
    assert "'develop'" in message
    assert "main, release" in message


def test_unknown_commit(source: GitSource, upstream: Path) -> None:
    with pytest.raises(NotFoundError, match="deadbeef"):
        source.resolve("web", str(upstream), "deadbeef", "main")
    with pytest.raises(NotFoundError, match="0" * 40):
        source.checkout("web", "0" * 40, source.cache_dir / "x")


def test_unreachable_repository_names_the_url_and_gits_error(
    source: GitSource, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-repo"

    with pytest.raises(PermanentError) as caught:
        source.resolve("web", str(missing), None, "main")

    assert str(missing) in str(caught.value)
    assert "does not appear to be a git repository" in str(caught.value)
    assert caught.value.hint
    # A failed first fetch leaves no half-made cache behind.
    assert not (source.cache_dir / "web.git").exists()
    assert [p.name for p in source.cache_dir.iterdir()] == ["web.lock"]


def test_second_sync_fetches_into_the_same_cache(source: GitSource, upstream: Path) -> None:
    source.sync("web", str(upstream))
    cache = source.cache_dir / "web.git"
    marker = cache / "stackyard-marker"
    marker.write_text("kept")
    inode = cache.stat().st_ino

    new = commit(upstream, {"README.md": "two\n"}, "Second")
    found = source.resolve("web", str(upstream), None, "main")

    assert found.sha == new
    assert found.subject == "Second"
    assert marker.read_text() == "kept"
    assert cache.stat().st_ino == inode


def test_sync_prunes_deleted_branches(source: GitSource, upstream: Path) -> None:
    git(upstream, "branch", "feature")
    source.sync("web", str(upstream))
    git(upstream, "branch", "-D", "feature")

    source.sync("web", str(upstream))

    assert source.branches("web") == ["main"]


def test_changed_url_updates_the_remote(source: GitSource, upstream: Path, tmp_path: Path) -> None:
    source.sync("web", str(upstream))
    moved = tmp_path / "moved"
    upstream.rename(moved)
    new = commit(moved, {"README.md": "moved\n"}, "After the move")

    assert source.resolve("web", f"file://{moved}", None, "main").sha == new


def test_checkout_is_a_work_tree_of_the_exact_commit(
    source: GitSource, upstream: Path, tmp_path: Path
) -> None:
    first = source.resolve("web", str(upstream), None, "main").sha
    commit(upstream, {"README.md": "later\n", "later.txt": "x\n"}, "Later")
    source.sync("web", str(upstream))

    with source.workspace("web", first, parent=tmp_path / "ws") as tree:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True, check=True
        ).stdout.strip()
        assert head == first
        assert (tree / "README.md").read_text() == "one\n"
        assert (tree / "services/api/main.py").read_text() == "v1\n"
        assert not (tree / "later.txt").exists()
        assert git(tree, "status", "--porcelain") == ""
        checkout_dir = tree

    assert not checkout_dir.exists()
    assert list((tmp_path / "ws").iterdir()) == []
    cache = source.cache_dir / "web.git"
    assert not (cache / "worktrees").exists() or not list((cache / "worktrees").iterdir())
    # The cache is still valid: resolve and check out again.
    latest = source.resolve("web", str(upstream), None, "main").sha
    with source.workspace("web", latest, parent=tmp_path / "ws") as tree:
        assert (tree / "later.txt").exists()


def test_a_standalone_checkout_needs_nothing_of_the_cache(
    source: GitSource, upstream: Path, tmp_path: Path
) -> None:
    first = source.resolve("web", str(upstream), None, "main").sha
    commit(upstream, {"later.txt": "x\n"}, "Later")
    source.sync("web", str(upstream))
    dest = tmp_path / "build" / "src"

    source.checkout("web", first, dest, standalone=True)
    moved = tmp_path / "cache-elsewhere"
    source.cache_dir.rename(moved)  # as in a build container, which mounts only dest

    assert (dest / ".git").is_dir()
    assert git(dest, "rev-parse", "HEAD") == first
    assert git(dest, "log", "--format=%s") == "First commit"
    assert git(dest, "status", "--porcelain") == ""
    assert not (dest / "later.txt").exists()
    # What it fetched is one pack, whole (no loose objects, no leftover .keep).
    counts = dict(line.split(": ") for line in git(dest, "count-objects", "-v").splitlines())
    assert (counts["count"], counts["packs"]) == ("0", "1")
    assert not list((dest / ".git" / "objects" / "pack").glob("*.keep"))
    git(dest, "fsck", "--strict")
    moved.rename(source.cache_dir)
    cache = source.cache_dir / "web.git"
    assert not (cache / "worktrees").exists() or not list((cache / "worktrees").iterdir())


def test_checkout_into_a_given_directory(source: GitSource, upstream: Path, tmp_path: Path) -> None:
    sha = source.resolve("web", str(upstream), None, "main").sha
    dest = tmp_path / "build" / "src"

    assert source.checkout("web", sha, dest) == dest
    assert git(dest, "rev-parse", "HEAD") == sha
    source.remove_checkout("web", dest)

    assert not dest.exists()
    with pytest.raises(UsageError, match="not empty"):
        source.checkout("web", sha, tmp_path)


def test_checkout_initialises_submodules(source: GitSource, upstream: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    git(library, "init", "-q", "-b", "main")
    commit(library, {"lib.txt": "shared\n"}, "Library")
    git(upstream, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "lib")
    sha = commit(upstream, {}, "Add the library")

    source.resolve("web", str(upstream), None, "main")
    with source.workspace("web", sha, parent=tmp_path / "ws") as tree:
        assert (tree / "lib" / "lib.txt").read_text() == "shared\n"


def test_concurrent_checkouts_of_one_stack(
    source: GitSource, upstream: Path, tmp_path: Path
) -> None:
    first = source.resolve("web", str(upstream), None, "main").sha
    second = commit(upstream, {"README.md": "two\n"}, "Second")
    heads: dict[str, str] = {}
    errors: list[BaseException] = []

    def build(sha: str) -> None:
        try:
            source.sync("web", str(upstream))
            with source.workspace("web", sha, parent=tmp_path / "ws") as tree:
                heads[sha] = git(tree, "rev-parse", "HEAD")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(sha,)) for sha in (first, second) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert heads == {first: first, second: second}
    assert git(source.cache_dir / "web.git", "fsck", "--no-progress") == ""


def test_read_file_at_a_commit(source: GitSource, upstream: Path) -> None:
    first = source.resolve("web", str(upstream), None, "main").sha
    commit(upstream, {"README.md": "two\n", "stackyard.yml": "stages: []\n"}, "Second")
    second = source.resolve("web", str(upstream), None, "main").sha

    assert source.read_file("web", first, "README.md") == b"one\n"
    assert source.read_file("web", second, "./README.md") == b"two\n"
    assert source.read_file("web", first, "stackyard.yml") is None
    assert source.read_file("web", second, "stackyard.yml") == b"stages: []\n"
    assert source.read_file("web", second, "services") is None
    with pytest.raises(UsageError):
        source.read_file("web", second, "../etc/passwd")
    with pytest.raises(NotFoundError):
        source.read_file("web", "1" * 40, "README.md")


def test_a_file_git_cannot_read_is_an_error_not_a_missing_file(
    source: GitSource, upstream: Path
) -> None:
    sha = source.resolve("web", str(upstream), None, "main").sha
    cache = source.cache_dir / "web.git"
    blob = git(cache, "rev-parse", f"{sha}:README.md")
    loose = cache / "objects" / blob[:2] / blob[2:]
    assert loose.is_file()  # a small fetch keeps its objects loose
    loose.chmod(0o644)
    loose.write_bytes(b"not a zlib stream")

    with pytest.raises(ComponentError, match=r"could not read README.md at commit") as caught:
        source.read_file("web", sha, "README.md")
    assert f"delete {cache}" in (caught.value.hint or "")
    assert source.read_file("web", sha, "stackyard.yml") is None  # still an answer


def test_a_damaged_cache_is_never_taken_for_a_missing_commit_or_file(
    source: GitSource, upstream: Path
) -> None:
    sha = source.resolve("web", str(upstream), None, "main").sha
    config = source.cache_dir / "web.git" / "config"
    config.write_text(config.read_text() + "[broken\n")

    for read in (
        lambda: source.read_file("web", sha, "README.md"),
        lambda: source.read_file("web", sha, "stackyard.yml"),
        lambda: source.changed_paths("web", None, sha),
        lambda: source.resolve("web", str(upstream), sha, "main"),
    ):
        with pytest.raises(ComponentError, match="bad config line") as caught:
            read()
        assert not isinstance(caught.value, NotFoundError)


def test_changed_paths(source: GitSource, upstream: Path) -> None:
    first = source.resolve("web", str(upstream), None, "main").sha
    git(upstream, "rm", "-q", "README.md")
    commit(upstream, {"services/api/main.py": "v2\n", "libs/odd name.txt": "x\n"}, "Second")
    second = source.resolve("web", str(upstream), None, "main").sha

    assert source.changed_paths("web", first, second) == [
        "README.md",
        "libs/odd name.txt",
        "services/api/main.py",
    ]
    assert source.changed_paths("web", None, first) == ["README.md", "services/api/main.py"]
    # An old sha the cache does not know (a force push) counts as "everything".
    assert source.changed_paths("web", "2" * 40, second) == [
        "libs/odd name.txt",
        "services/api/main.py",
    ]


@pytest.mark.parametrize(
    ("path", "glob", "expected"),
    [
        ("services/api/main.py", "services/api/**", True),
        ("services/api/main.py", "services/api", True),
        ("services/api/main.py", "services/api/", True),
        ("services/api/main.py", "services/*", True),
        ("services/api/main.py", "services/*.py", False),
        ("services/api/main.py", "**/*.py", True),
        ("main.py", "**/*.py", True),
        ("services/api/main.py", "*.py", False),
        ("services/apiary/x.py", "services/api", False),
        ("libs/shared/a/b/c.txt", "libs/**/c.txt", True),
        ("libs/shared/a/b/c.txt", "libs/*/c.txt", False),
        ("Dockerfile", "./Dockerfile", True),
        ("docs/Readme.md", "docs/readme.md", False),
        ("anything/at/all", ".", True),
    ],
)
def test_matches_paths(path: str, glob: str, expected: bool) -> None:
    assert matches_paths([path], [glob]) is expected


def test_matches_paths_any_of_many() -> None:
    changed = ["README.md", "services/web/app.js"]
    assert matches_paths(changed, ["services/api/**", "services/web/**"])
    assert not matches_paths(changed, ["services/api/**"])
    assert not matches_paths(changed, [])
    assert not matches_paths([], ["**"])


@pytest.mark.parametrize("stack", ["Web", "../etc", "-x", "", "a.b", "web/api"])
def test_unsafe_stack_names_are_refused(source: GitSource, upstream: Path, stack: str) -> None:
    with pytest.raises(UsageError, match="stack name"):
        source.sync(stack, str(upstream))


def test_bad_inputs_are_usage_errors(source: GitSource, upstream: Path) -> None:
    with pytest.raises(UsageError):
        source.sync("web", "--upload-pack=touch /tmp/x")
    with pytest.raises(UsageError):
        source.resolve("web", str(upstream), "--all", "main")
    source.sync("web", str(upstream))
    with pytest.raises(UsageError, match="sha"):
        source.read_file("web", "HEAD", "README.md")
    with pytest.raises(NotFoundError, match="no repository cache"):
        source.read_file("api", "0" * 40, "README.md")


def test_fetch_timeout_is_retryable(tmp_path: Path, upstream: Path) -> None:
    source = GitSource(tmp_path / "cache", fetch_timeout=0.001)

    with pytest.raises(RetryableError, match=r"timed out .* fetch"):
        source.sync("web", str(upstream))


def test_damaged_cache_is_a_component_error(source: GitSource, upstream: Path) -> None:
    source.sync("web", str(upstream))
    sha = git(upstream, "rev-parse", "HEAD")
    (source.cache_dir / "web.git" / "worktrees").write_text("not a directory")

    with pytest.raises(ComponentError) as caught:
        source.checkout("web", sha, source.cache_dir.parent / "out")
    assert "delete" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a.git", "https://example.com/a.git"),
        ("ssh://git@example.com/a.git", "ssh://git@example.com/a.git"),
        ("git@example.com:team/a.git", "git@example.com:team/a.git"),
        ("file:///srv/a.git", "file:///srv/a.git"),
        ("/srv/a.git", "/srv/a.git"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_url("repos/a") == str(tmp_path / "repos" / "a")


def test_redact_url_hides_tokens() -> None:
    assert redact_url("https://bot:s3cret@example.com/a.git") == "https://bot:***@example.com/a.git"
    assert redact_url("git@example.com:a.git") == "git@example.com:a.git"
