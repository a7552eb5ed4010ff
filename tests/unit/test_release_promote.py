"""How a release promotes: release.yml when the commit has it, else a retag that says so.

A real git repository and GitSource; the registry is the Registry seam's in-memory fake.
Nothing that goes wrong reading release.yml may turn into a silent retag.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stackyard.buildspec.isolation import BuildIsolation
from stackyard.images.imagestore import ImageStore
from stackyard.images.registry_fake import FakeRegistry
from stackyard.pipeline.releases import ReleaseFailure, ReleaseService
from stackyard.registry_login import RegistryLogin
from stackyard.secrets.fake import FakeSecretStore
from stackyard.source.git import GitSource
from stackyard.stacks.service import StackChanges, StackService
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build

from .test_source_git import commit, git

STACK = "shop"
CONFIG = {"stages": [{"name": "dev"}, {"name": "prod"}]}


@dataclass
class Yard:
    repo: Path
    logs: Path
    registry: FakeRegistry
    source: GitSource
    releases: ReleaseService
    stacks: StackService

    def built(self, sha: str, number: int = 1, config: dict[str, Any] | None = None) -> str:
        """``sha`` built and pushed as ``latest`` and ``<sha>``: its digest, recorded as
        build ``number`` with ``config`` (stackyard.yml; default CONFIG)."""
        digest = self.registry.push_image(STACK, "latest", [sha.encode()])
        self.registry.retag(STACK, digest, sha)
        self.source.resolve(STACK, str(self.repo), sha, "main")  # into the cache
        with self.releases._sessions.begin() as session:
            stack = StackService.row(session, STACK)
            session.add(
                Build(
                    stack_id=stack.id,
                    number=number,
                    commit_sha=sha,
                    status="SUCCEEDED",
                    digest=digest,
                    config=config or CONFIG,
                )
            )
        return digest

    def attempt_log(self) -> str:
        [path] = (self.logs / "releases" / STACK / "dev").glob("attempt-*.log")
        return path.read_text(encoding="utf-8")


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    database = open_database(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(database)
    sessions = session_factory(database)
    stacks = StackService(sessions)
    stacks.create(STACK, StackChanges(repo=str(repo)))
    registry = FakeRegistry("127.0.0.1:5999")
    images = ImageStore(registry, RegistryLogin("127.0.0.1:5999", "u", "p"))
    source = GitSource(tmp_path / "git")
    releases = ReleaseService(
        sessions,
        source,
        images,
        FakeSecretStore(),
        logs_dir=tmp_path / "logs",
        work_dir=tmp_path / "work",
        isolation=BuildIsolation(None),
    )
    yield Yard(repo, tmp_path / "logs", registry, source, releases, stacks)
    database.dispose()


def test_without_release_yml_the_release_retags_and_says_why(
    yard: Yard, caplog: pytest.LogCaptureFixture
) -> None:
    sha = commit(yard.repo, {"README.md": "hello\n"}, "no release spec")
    digest = yard.built(sha)
    with caplog.at_level(logging.INFO, logger="stackyard.pipeline.releases"):
        release = yard.releases.release(STACK, "dev")
    assert (release.digest, release.source) == (digest, "retag latest")
    assert yard.registry.tags[(STACK, "dev")] == digest
    log = Path(release.log_path).read_text(encoding="utf-8")
    assert f"no release.yml at commit {sha[:12]}: the default release, a retag" in log
    assert "release of shop dev: no release.yml, retagging" in caplog.text


def test_release_yml_git_cannot_read_fails_the_release_and_moves_no_tag(yard: Yard) -> None:
    sha = commit(yard.repo, {"release.yml": "version: 0.2\nphases: {}\n"}, "release spec")
    yard.built(sha)
    cache = yard.source.repo_path(STACK)
    blob = git(cache, "rev-parse", f"{sha}:release.yml")
    loose = cache / "objects" / blob[:2] / blob[2:]
    loose.chmod(0o644)
    loose.write_bytes(b"damaged")

    with pytest.raises(ReleaseFailure, match=r"git could not read release\.yml"):
        yard.releases.release(STACK, "dev")
    assert (STACK, "dev") not in yard.registry.tags  # no silent retag
    assert yard.releases.list(STACK) == []
    assert "release FAILED: git could not read release.yml" in yard.attempt_log()


def test_a_release_yml_that_is_no_file_in_the_checkout_fails_the_release(yard: Yard) -> None:
    os.symlink("nowhere.yml", yard.repo / "release.yml")
    sha = commit(yard.repo, {"README.md": "hello\n"}, "a dangling release spec")
    yard.built(sha)

    with pytest.raises(ReleaseFailure, match=r"release\.yml is a file at commit"):
        yard.releases.release(STACK, "dev")
    assert (STACK, "dev") not in yard.registry.tags
    assert "not in its checkout" in yard.attempt_log()
