"""RetentionService over its seams (FakeRegistry, FakeEngine, SQLite): the deletions of a
stack wait for its build worker and keep what a release took up meanwhile; the report is
written; a second run at the same time is refused; with the fake engine the machine's images
are left alone; a build's own prune of old images waits for the stack's build under way."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from stackyard.buildspec.isolation import BuildIsolation
from stackyard.engines.fake import FakeEngine
from stackyard.errors import ComponentError, NotFoundError, UsageError
from stackyard.images.imagestore import ImageStore, Placement
from stackyard.images.registry_base import Registry
from stackyard.images.registry_fake import FakeRegistry
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.retention.plan import ManifestRemoval
from stackyard.pipeline.retention.service import CopyPlace, RetentionService
from stackyard.pipeline.services import build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.source.fake import FakeSource
from stackyard.stacks.service import StackService
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Release, RetiredStage, Stack


class NoImages:
    """The engine's images as a DockerBuilder would list them: none here."""

    def images_named(self, *registries: str) -> list[tuple[str, tuple[str, ...]]]:
        return []

    def remove_reference(self, reference: str) -> bool:
        return False

    def unique_bytes(self, image_ids: set[str]) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    database = open_database(f"sqlite:///{tmp_path / 'stackyard.db'}")
    migrate(database)
    yield session_factory(database)
    database.dispose()


def release(sessions: sessionmaker[Session], number: int, digest: str, stage: str = "dev") -> None:
    with sessions.begin() as session:
        stack = session.query(Stack).filter_by(name="shop").one()
        session.add(Release(stack_id=stack.id, stage=stage, number=number, digest=digest))


def service(
    sessions: sessionmaker[Session],
    registry: FakeRegistry,
    data_dir: Path,
    between_builds: Callable[[str, Callable[[], None]], None],
    collected: list[str],
    every: float = 86400.0,
    copy_place: CopyPlace = lambda _stack, _target: None,
) -> RetentionService:
    return RetentionService(
        sessions,
        ImageStore(registry, RegistryLogin(registry.endpoint, "u", "p")),
        FakeEngine(),
        platform_id="unit",
        data_dir=data_dir,
        keep_releases=2,
        between_builds=between_builds,
        builder_factory=NoImages,  # type: ignore[arg-type]
        collect_garbage=lambda: collected.append("gc") or "",
        every=every,
        copy_place=copy_place,
    )


def test_a_digest_a_release_takes_up_before_the_deletion_is_kept(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions.begin() as session:
        session.add(Stack(name="shop", repo="/src/shop"))
    registry = FakeRegistry()
    digests = [registry.push_image("shop", f"c{n}", [f"layer {n}".encode()]) for n in (1, 2, 3, 4)]
    registry.push_image("shop", "dev", [b"layer 4"])
    for number, digest in enumerate(digests, start=1):
        release(sessions, number, digest)
    waited: list[str] = []
    collected: list[str] = []

    def between_builds(stack: str, action: Callable[[], None]) -> None:
        waited.append(stack)
        release(sessions, 5, digests[0])  # a rollback to release 1, while the plan waited
        action()

    retention = service(sessions, registry, tmp_path, between_builds, collected)
    assert [m.digest for m in retention.plan().manifests] == sorted(digests[:2])
    report = retention.run()
    assert waited == ["shop"]
    assert report.manifests == [f"shop@{digests[1]}"]
    assert registry.resolve("shop", "c1") == digests[0]
    assert collected == ["gc"]
    assert report.errors == []
    assert retention.last_report() == report.to_dict()


def test_a_retired_stage_keeps_no_image(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """`stackyard stages remove` stopped staging: its releases stay as history, but keep
    neither their images nor its tag's (a stage brought back is released afresh)."""
    with sessions.begin() as session:
        session.add(Stack(name="shop", repo="/src/shop"))
    registry = FakeRegistry()
    digests = [registry.push_image("shop", f"c{n}", [f"layer {n}".encode()]) for n in (1, 2, 3)]
    registry.push_image("shop", "staging", [b"layer 1"])
    release(sessions, 1, digests[1])
    release(sessions, 2, digests[2])
    release(sessions, 1, digests[0], stage="staging")
    retention = service(sessions, registry, tmp_path, lambda _stack, action: action(), [])
    assert retention.plan().kept["shop"][digests[0]] == "release 1 of staging"

    with sessions.begin() as session:
        stack = session.query(Stack).filter_by(name="shop").one()
        session.add(RetiredStage(stack_id=stack.id, stage="staging", retired_by="admin"))
    plan = retention.plan()
    assert plan.kept["shop"] == {digests[2]: "release 2 of dev", digests[1]: "release 1 of dev"}
    assert plan.manifests == (ManifestRemoval("shop", digests[0], ("c1", "staging")),)
    retention.run()
    with pytest.raises(NotFoundError):
        registry.resolve("shop", "staging")


def test_a_second_run_while_one_runs_is_refused(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions.begin() as session:
        session.add(Stack(name="shop", repo="/src/shop"))
    registry = FakeRegistry()
    for n in (1, 2, 3):
        release(sessions, n, registry.push_image("shop", f"c{n}", [f"layer {n}".encode()]))
    refused: list[UsageError] = []

    def between_builds(_stack: str, action: Callable[[], None]) -> None:
        with pytest.raises(UsageError, match="running already") as caught:
            retention.run()
        refused.append(caught.value)
        action()

    retention = service(sessions, registry, tmp_path, between_builds, [])
    assert retention.run().errors == []
    assert len(refused) == 1


def test_with_an_engine_that_keeps_no_images_here_the_machines_images_are_left_alone(
    sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wired by build_services with the fake engine (as every unit test of the API is),
    retention neither counts nor prunes the images of the machine's Docker engine: they
    are not the fake platform's, and the engine may be shared. An engine reached here
    would fail: DOCKER_HOST names a socket that does not exist."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    settings = Settings(data_dir=tmp_path / "data", source="fake", registry="fake")
    login = RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password")
    services = build_services(settings, sessions, login, engine=FakeEngine(), router=FakeRouter())
    try:
        assert not FakeEngine.supports_local_images
        assert "engine images" not in services.retention.disk_use()
        report = services.retention.run()
        assert report.errors == []
        assert report.engine_references == []
        assert "engine images" not in report.before
    finally:
        services.close()


PRUNED: list[str] = []


class RecordingBuilder:
    """A DockerBuilder's prune, recorded in PRUNED."""

    def prune(self, repository: str) -> list[str]:
        PRUNED.append(repository)
        return []

    def close(self) -> None:
        pass


def test_the_builds_prune_of_old_images_waits_for_the_build_under_way(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A build's removal of its stack's old engine images runs on the stack's build
    worker: an image removed while a build of the same Dockerfile looks for its cache
    fails that build ("unable to find image"), as the 30-build retention test saw when
    the removal ran on a timer thread of its own."""
    registry = FakeRegistry()
    PRUNED.clear()
    builds = BuildService(
        sessions,
        StackService(sessions),
        FakeSource(),
        ImageStore(registry, RegistryLogin(registry.endpoint, "u", "p")),
        logs_dir=tmp_path / "logs",
        work_dir=tmp_path / "work",
        network_mode="host",
        isolation=BuildIsolation(None),
        builder_factory=RecordingBuilder,  # type: ignore[arg-type]
    )
    building = threading.Event()
    finish = threading.Event()

    def a_build() -> None:
        building.set()
        finish.wait(timeout=60)

    under_way = threading.Thread(target=builds.between_builds, args=("shop", a_build))
    under_way.start()
    try:
        assert building.wait(timeout=60)
        builds._prune_between_builds("shop", "127.0.0.1:5000/shop")  # the timer fired
        assert PRUNED == []  # not during the build
    finally:
        finish.set()
        under_way.join(timeout=60)
    builds.between_builds("shop", lambda: None)  # after everything queued before it
    assert PRUNED == ["127.0.0.1:5000/shop"]
    builds.shutdown()


def test_a_stack_on_an_outside_registry_is_pruned_in_the_platforms_registry_only(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Its images left in the platform's registry (from before it moved) go; the outside
    registry's tags are neither read as the platform's nor deleted."""
    with sessions.begin() as session:
        session.add(Stack(name="shop", repo="/src/shop"))
    local, outside = FakeRegistry(), FakeRegistry("127.0.0.1:6001")
    old = [local.push_image("shop", f"c{n}", [f"old {n}".encode()]) for n in (1, 2)]
    moved = [outside.push_image("acme/shop", f"c{n}", [f"new {n}".encode()]) for n in (3, 4, 5)]
    for number, digest in enumerate(moved, start=1):
        release(sessions, number, digest)
    placement = Placement("acme", None, "acme", RegistryLogin(outside.endpoint, "bot", "pw"))
    images = ImageStore(
        local,
        RegistryLogin(local.endpoint, "u", "p"),
        placement=lambda stack: placement if stack == "shop" else None,
        connect=lambda _placement: outside,
    )
    retention = RetentionService(
        sessions,
        images,
        FakeEngine(),
        platform_id="unit",
        data_dir=tmp_path,
        keep_releases=2,
        between_builds=lambda _stack, action: action(),
        builder_factory=NoImages,  # type: ignore[arg-type]
    )
    assert sorted(m.digest for m in retention.plan().manifests) == sorted(old)
    assert retention.run().errors == []
    assert [outside.resolve("acme/shop", f"c{n}") for n in (3, 4, 5)] == moved


def test_an_interval_of_0_turns_the_schedule_off(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """`up --retention-interval 0`: no schedule thread (retention runs when asked); any other
    interval starts one, which stop ends."""

    def schedules() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "retention"]

    for every, expected in ((0.0, 0), (3600.0, 1)):
        retention = service(
            sessions, FakeRegistry(), tmp_path, lambda _stack, action: action(), [], every
        )
        retention.start()
        try:
            assert len(schedules()) == expected
        finally:
            retention.stop()
        assert schedules() == []


class RefusingRegistry(FakeRegistry):
    """A target's registry whose account may not delete."""

    def delete_manifest(self, repository: str, digest: str) -> None:
        raise ComponentError(f"registry {self.endpoint} refused to delete {repository}@{digest}")


def released_on(sessions: sessionmaker[Session], number: int, digest: str, target: str) -> None:
    with sessions.begin() as session:
        stack = session.query(Stack).filter_by(name="shop").one()
        config = {"stage": {"name": "dev", "target": target}}
        session.add(
            Release(stack_id=stack.id, stage="dev", number=number, digest=digest, config=config)
        )


def with_targets(
    sessions: sessionmaker[Session], local: FakeRegistry, data_dir: Path, copy_place: CopyPlace
) -> RetentionService:
    """Retention keeping 2 releases per stage, with stages on targets that have registries."""
    return service(sessions, local, data_dir, lambda _stack, act: act(), [], copy_place=copy_place)


def test_old_copies_in_a_targets_registry_go_the_kept_releases_stay_a_refusal_is_reported(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions.begin() as session:
        session.add(Stack(name="shop", repo="/src/shop"))
    local, eu, us = FakeRegistry(), FakeRegistry("127.0.0.1:6002"), RefusingRegistry("us:6003")
    digests = [local.push_image("shop", f"c{n}", [f"layer {n}".encode()]) for n in (1, 2, 3, 4)]
    for n, digest in enumerate(digests[:3], start=1):  # releases 1-3 on eu, copied there
        assert eu.push_image("acme/shop", "dev", [f"layer {n}".encode()]) == digest
        released_on(sessions, n, digest, "eu")
    assert us.push_image("acme/shop", "dev", [b"layer 1"]) == digests[0]
    released_on(sessions, 4, digests[0], "us")  # a rollback to release 1's image, on us
    released_on(sessions, 5, digests[3], "gone")  # a target removed since: not looked at
    places = {"eu": (eu, "acme/shop"), "us": (us, "acme/shop")}

    def copy_place(stack: str, target: str) -> tuple[Registry, str] | None:
        if target not in places:
            raise NotFoundError(f"no target named '{target}'")
        return places[target]

    retention = with_targets(sessions, local, tmp_path, copy_place)  # keeps digests 4 and 1
    old = sorted(digests[1:3])
    assert retention.run(dry_run=True).manifests == [
        *(f"shop@{d}" for d in old),
        *(f"127.0.0.1:6002/acme/shop@{d}" for d in old),
    ]
    assert eu.resolve("acme/shop", old[0]) == old[0]  # a dry run deletes nothing

    report = retention.run()
    assert sorted(report.manifests) == sorted(
        [*(f"shop@{d}" for d in old), *(f"127.0.0.1:6002/acme/shop@{d}" for d in old)]
    )
    for digest in old:
        with pytest.raises(NotFoundError):
            eu.get_manifest("acme/shop", digest)
    assert eu.resolve("acme/shop", digests[0]) == digests[0]  # release 1's image is kept
    assert us.resolve("acme/shop", "dev") == digests[0]  # kept: nothing asked of us
    assert report.errors == []
    assert retention.run().manifests == []  # already gone: nothing to report the next time


def test_a_target_registry_that_refuses_to_delete_is_reported_and_the_rest_goes_on(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions.begin() as session:
        session.add(Stack(name="shop", repo="/src/shop"))
    local, us = FakeRegistry(), RefusingRegistry("us:6003")
    digests = [local.push_image("shop", f"c{n}", [f"layer {n}".encode()]) for n in (1, 2, 3)]
    for n, digest in enumerate(digests, start=1):
        us.push_image("acme/shop", f"c{n}", [f"layer {n}".encode()])
        released_on(sessions, n, digest, "us")
    retention = with_targets(sessions, local, tmp_path, lambda _stack, _target: (us, "acme/shop"))
    report = retention.run()
    assert report.manifests == [f"shop@{digests[0]}"]  # the platform's registry: pruned
    assert report.errors == [
        f"copies of shop in us:6003/acme/shop: registry us:6003 refused "
        f"to delete acme/shop@{digests[0]}"
    ]
    assert us.resolve("acme/shop", "c1") == digests[0]
