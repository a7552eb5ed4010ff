"""Releasing to a stage whose target pulls from another registry: the image is copied there
by digest (only missing blobs, the manifest last), then that registry's stage tag moves.

A real git repository and GitSource; the registries are the Registry seam's in-memory fake
(two objects are two registries), the copy is the seam's own ``Registry.copy``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from stackyard.buildspec.isolation import BuildIsolation
from stackyard.engines.fake import FakeEngine
from stackyard.errors import NotFoundError, RetryableError
from stackyard.images.imagestore import ImageStore, Placement, TargetPlace
from stackyard.images.manifest import Manifest
from stackyard.images.registry_base import Registry
from stackyard.images.registry_fake import FakeRegistry
from stackyard.pipeline.releases import ReleaseFailure, ReleaseService
from stackyard.pipeline.retention.service import RetentionReport, RetentionService
from stackyard.registry_login import RegistryLogin
from stackyard.secrets.fake import FakeSecretStore
from stackyard.source.git import GitSource
from stackyard.stacks.service import StackChanges, StackService
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, Release

from .test_source_git import commit, git

STACK = "shop"
CONFIG = {"stages": [{"name": "dev"}, {"name": "prod", "target": "eu"}]}
EU = Placement("eu-registry", None, "acme", RegistryLogin("127.0.0.1:5998", "bot", "pw"))


@dataclass
class Hold:
    """Stops the next ``put_manifest`` of ``tag`` until ``go`` is set; ``reached`` says it
    got there."""

    tag: str
    reached: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)


class CutRegistry(FakeRegistry):
    """A registry whose connection drops once, after ``cut_after`` blobs arrived, and that
    can hold one tag's manifest put (``hold``)."""

    cut_after: int | None = None
    hold: Hold | None = None

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        hold = self.hold
        if hold is not None and reference == hold.tag:
            self.hold = None
            hold.reached.set()
            assert hold.go.wait(timeout=60), "the test never let the held put go on"
        return super().put_manifest(repository, reference, manifest)

    def blob_exists(self, repository: str, digest: str) -> bool:
        if self.cut_after is not None and self.counts.blob_uploads >= self.cut_after:
            self.cut_after = None
            raise RetryableError(f"registry {self.endpoint}: connection reset")
        return super().blob_exists(repository, digest)


@dataclass
class Yard:
    repo: Path
    source: GitSource
    home: CutRegistry
    eu: CutRegistry
    releases: ReleaseService
    known: dict[str, TargetPlace]

    def built(self, sha: str, number: int = 1) -> str:
        """``sha`` built as build ``number``, pushed as ``latest``: its digest."""
        layers = [sha.encode(), b"base layer" * 100]
        digest = self.home.push_image(STACK, "latest", layers[: 2 if number == 1 else 1])
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
                    config=CONFIG,
                )
            )
        return digest

    def release_count(self) -> int:
        with self.releases._sessions() as session:
            return len(session.scalars(select(Release.id)).all())


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    database = open_database(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(database)
    sessions = session_factory(database)
    StackService(sessions).create(STACK, StackChanges(repo=str(repo)))
    home, eu = CutRegistry("127.0.0.1:5999"), CutRegistry(EU.endpoint)

    def connect(placement: Placement) -> Registry:
        assert placement == EU
        return eu

    images = ImageStore(home, RegistryLogin(home.endpoint, "u", "p"), connect=connect)
    known = {
        "local": TargetPlace("local"),
        "eu": TargetPlace("eu", "eu-west", EU, builtin=False),
    }

    def targets(name: str) -> TargetPlace:
        if name not in known:
            raise NotFoundError(f"no target named '{name}'")
        return known[name]

    source = GitSource(tmp_path / "git")
    releases = ReleaseService(
        sessions,
        source,
        images,
        FakeSecretStore(),
        logs_dir=tmp_path / "logs",
        work_dir=tmp_path / "work",
        isolation=BuildIsolation(None),
        targets=targets,
    )
    yield Yard(repo, source, home, eu, releases, known)
    database.dispose()


def test_a_stage_on_a_target_with_its_own_registry_gets_the_same_digest_there(
    yard: Yard,
) -> None:
    sha = commit(yard.repo, {"README.md": "hi\n"}, "app")
    digest = yard.built(sha)
    yard.releases.release(STACK, "dev")
    assert yard.eu.tags == {}  # dev runs on local: nothing is copied
    release = yard.releases.release(STACK, "prod")
    assert release.digest == digest
    assert yard.eu.tags == {("acme/shop", "prod"): digest}
    assert yard.home.tags[(STACK, "prod")] == digest  # the promotion chain stays at home
    assert yard.eu.counts.blob_uploads == 3  # config and two layers
    log = Path(release.log_path).read_text(encoding="utf-8")
    assert f"target eu: copy {digest} to registry eu-registry as prod" in log

    again = yard.releases.release(STACK, "prod")  # everything is there: no blob moves
    assert again.digest == digest
    assert yard.eu.counts.blob_uploads == 3


def test_a_copy_cut_short_moves_no_tag_and_the_next_release_finishes_it(yard: Yard) -> None:
    sha = commit(yard.repo, {"README.md": "hi\n"}, "app")
    digest = yard.built(sha)
    yard.releases.release(STACK, "dev")
    yard.eu.cut_after = 1
    cut = r"copying sha256:\w+ to registry eu-registry of target eu"
    with pytest.raises(ReleaseFailure, match=cut):
        yard.releases.release(STACK, "prod")
    assert yard.eu.counts.blob_uploads == 1
    assert yard.eu.tags == {}  # no tag names an incomplete image
    assert yard.eu.manifests == {}
    assert (STACK, "prod") not in yard.home.tags
    assert yard.release_count() == 1  # only dev's

    release = yard.releases.release(STACK, "prod")
    assert release.digest == digest == yard.eu.tags[("acme/shop", "prod")]
    assert yard.eu.counts.blob_uploads == 3  # the two missing blobs, not the first again


def test_a_rollback_moves_the_tag_in_the_targets_registry_too(yard: Yard) -> None:
    first = yard.built(commit(yard.repo, {"README.md": "1\n"}, "one"))
    yard.releases.release(STACK, "dev")
    yard.releases.release(STACK, "prod")
    second = yard.built(commit(yard.repo, {"README.md": "2\n"}, "two"), number=2)
    yard.releases.release(STACK, "dev")
    yard.releases.release(STACK, "prod")
    assert yard.eu.tags[("acme/shop", "prod")] == second
    yard.releases.copy(STACK, "prod", 1, source="rollback", created_by="test")
    assert yard.eu.tags[("acme/shop", "prod")] == first == yard.home.tags[(STACK, "prod")]


def test_a_target_removed_since_the_build_fails_the_release_naming_it(yard: Yard) -> None:
    yard.built(commit(yard.repo, {"README.md": "hi\n"}, "app"))
    yard.releases.release(STACK, "dev")
    del yard.known["eu"]
    with pytest.raises(ReleaseFailure, match="release of shop prod failed: no target named 'eu'"):
        yard.releases.release(STACK, "prod")
    assert (STACK, "prod") not in yard.home.tags
    assert yard.release_count() == 1


def test_stage_target_answers_the_registry_and_region_a_stage_pulls_from(yard: Yard) -> None:
    yard.built(commit(yard.repo, {"README.md": "hi\n"}, "app"))
    prod = yard.releases.stage_target(STACK, "prod")
    assert (prod.region, prod.endpoint, prod.image_url) == (
        "eu-west",
        "127.0.0.1:5998",
        "127.0.0.1:5998/acme/shop",
    )
    dev = yard.releases.stage_target(STACK, "dev")
    assert (dev.region, dev.endpoint, dev.image_url) == (
        "",
        "127.0.0.1:5999",
        "127.0.0.1:5999/shop",
    )


class Said(logging.Handler):
    """Sets ``event`` when a record containing ``words`` is logged."""

    def __init__(self, words: str, event: threading.Event) -> None:
        super().__init__()
        self.words, self.event = words, event

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


def in_thread(work: Callable[[], object], *done: threading.Event) -> threading.Thread:
    def run() -> None:
        try:
            work()
        finally:
            for event in done:
                event.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_retention_waits_for_a_rollback_copying_an_old_digest_then_keeps_it(
    yard: Yard, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = yard.built(commit(yard.repo, {"README.md": "1\n"}, "one"))
    yard.releases.release(STACK, "dev")
    yard.releases.release(STACK, "prod")  # copied to eu
    second = yard.built(commit(yard.repo, {"README.md": "2\n"}, "two"), number=2)
    yard.releases.release(STACK, "dev")
    yard.releases.release(STACK, "prod")
    retention = RetentionService(
        yard.releases._sessions,
        ImageStore(yard.home, RegistryLogin(yard.home.endpoint, "u", "p")),
        FakeEngine(),
        platform_id="unit",
        data_dir=tmp_path / "data",
        keep_releases=1,  # the first image is old
        between_builds=lambda _stack, action: action(),
        builder_factory=None,
        copy_place=lambda _stack, target: (yard.eu, "acme/shop") if target == "eu" else None,
        stack_lock=yard.releases.stack_lock,
    )
    # (the fake home registry lists tagged manifests only: eu's copy is what is pruned)
    assert retention.run(dry_run=True).manifests == [f"127.0.0.1:5998/acme/shop@{first}"]

    # A rollback of prod to release 1: the first image is copied back to eu, and the
    # rollback is held where it moves the stage tag at home, before its release is recorded.
    hold = yard.home.hold = Hold("prod")
    rolled, pruned = threading.Event(), threading.Event()
    rollback = in_thread(
        lambda: yard.releases.copy(STACK, "prod", 1, source="rollback", created_by="test"),
        rolled,
    )
    assert hold.reached.wait(timeout=30)
    assert yard.eu.resolve("acme/shop", first) == first  # (back) on eu, not recorded yet

    # Retention now: it must wait for the rollback (it says so), not delete the first image
    # on eu (or at home) while the rollback's release is not recorded.
    settled = threading.Event()  # retention waits (it says so), or it has finished
    report = RetentionReport(keep_releases=1, dry_run=False, started_at="")
    said = Said("has a release under way; its deletions wait for it", settled)
    caplog.set_level(logging.INFO, logger="stackyard.pipeline.retention.service")
    logging.getLogger("stackyard.pipeline.retention.service").addHandler(said)
    try:

        def prune() -> None:
            report.manifests = retention.run().manifests

        pruning = in_thread(prune, pruned, settled)
        assert settled.wait(timeout=60)
        assert not pruned.is_set(), "retention ran to its end while a rollback was recording"
        hold.go.set()
        rollback.join(timeout=30)
        pruning.join(timeout=30)
    finally:
        hold.go.set()
        logging.getLogger("stackyard.pipeline.retention.service").removeHandler(said)
    assert rolled.is_set()
    assert pruned.is_set()

    # The rollback went first: its release (the first image) is kept everywhere.
    assert yard.eu.resolve("acme/shop", "prod") == first == yard.home.resolve(STACK, "prod")
    assert yard.eu.resolve("acme/shop", first) == first
    assert yard.home.resolve(STACK, first) == first
    assert report.manifests == []  # second's copies are kept by the tags and dev's release
    assert yard.eu.resolve("acme/shop", second) == second
