"""Releases own rollbacks and the stage tag; RedeployService makes the release, then deploys.

Real services over SQLite with the fake engine, router and registry (picked by name, as
the platform picks its adapters). No stage loop runs: deployments stay QUEUED.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from stackyard.engines.fake import FakeEngine
from stackyard.errors import NotFoundError, UsageError
from stackyard.images.registry_fake import FakeRegistry
from stackyard.pipeline.releases import config_snapshot
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, Deployment, Release, Stack

STACK, STAGE = "shop", "dev"
CONFIG = {"stages": [{"name": STAGE}]}


@dataclass
class Yard:
    services: Services
    registry: FakeRegistry
    stack_id: int
    digests: list[str]  # of releases 1, 2, 3

    def deployments(self) -> list[Deployment]:
        with self.services.deploy._sessions() as session:
            return list(session.scalars(select(Deployment).order_by(Deployment.number)))

    def release(self, number: int) -> Release:
        with self.services.deploy._sessions() as session:
            found = session.scalar(select(Release).where(Release.number == number))
            assert found is not None
            return found


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    """Releases 1 and 2 of dev COMPLETED in turn, release 3 made but never deployed;
    the registry's ``dev`` tag points at release 3's digest."""
    settings = Settings(data_dir=tmp_path, registry_port=5999, registry="fake")
    database = open_database(settings.database_url)
    migrate(database)
    sessions = session_factory(database)
    login = RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password")
    services = build_services(settings, sessions, login, engine=FakeEngine(), router=FakeRouter())
    registry = services.images.client
    assert isinstance(registry, FakeRegistry)
    digests = [registry.push_image(STACK, f"v{n}", [bytes([n])]) for n in (1, 2, 3)]
    registry.tags[(STACK, STAGE)] = digests[2]
    with sessions.begin() as session:
        stack = Stack(name=STACK, repo="/srv/shop", branch="main")
        session.add(stack)
        session.flush()
        session.add(Build(stack_id=stack.id, number=1, status="SUCCEEDED", config=CONFIG))
        for number, digest in enumerate(digests, start=1):
            snapshot = config_snapshot(CONFIG, STAGE, variables={"N": str(number)})
            session.add(
                Release(
                    stack_id=stack.id, stage=STAGE, number=number, digest=digest, config=snapshot
                )
            )
        for number in (1, 2):
            session.add(
                Deployment(
                    stack_id=stack.id,
                    stage=STAGE,
                    number=number,
                    release_number=number,
                    digest=digests[number - 1],
                    status="COMPLETED",
                    log_path=str(tmp_path / f"{number}.log"),
                )
            )
        stack_id = stack.id
    try:
        yield Yard(services, registry, stack_id, digests)
    finally:
        services.close()
        database.dispose()


def test_deploying_an_older_release_moves_the_stage_tag_to_it(yard: Yard) -> None:
    deployment = yard.services.redeploy.deploy(STACK, STAGE, 1, trigger="api")
    assert (deployment.release_number, deployment.status) == (1, "QUEUED")
    assert yard.registry.tags[(STACK, STAGE)] == yard.digests[0]


def test_deploying_the_latest_release_leaves_the_tag_alone(yard: Yard) -> None:
    yard.registry.tags[(STACK, STAGE)] = yard.digests[1]  # moved by hand: not ours to fix
    puts = yard.registry.counts.manifest_puts
    deployment = yard.services.redeploy.deploy(STACK, STAGE, 3, trigger="api")
    assert deployment.release_number == 3
    assert yard.registry.counts.manifest_puts == puts
    assert yard.registry.tags[(STACK, STAGE)] == yard.digests[1]


def test_deploying_a_release_that_does_not_exist_moves_nothing(yard: Yard) -> None:
    with pytest.raises(NotFoundError, match="release 9"):
        yard.services.redeploy.deploy(STACK, STAGE, 9, trigger="api")
    assert yard.registry.tags[(STACK, STAGE)] == yard.digests[2]
    assert len(yard.deployments()) == 2


def test_a_rollback_to_an_unknown_stage_names_the_stages(yard: Yard) -> None:
    with pytest.raises(NotFoundError, match=r"no stage 'qa' \(stages: dev\)"):
        yard.services.redeploy.rollback(STACK, "qa", 1)
    with pytest.raises(NotFoundError, match=r"no stage 'qa' \(stages: dev\)"):
        yard.services.redeploy.rollback(STACK, "qa", None)


def test_a_rollback_copies_the_newest_other_completed_release(yard: Yard) -> None:
    deployment = yard.services.redeploy.rollback(STACK, STAGE, None)
    copy = yard.release(deployment.release_number)
    assert deployment.release_number == 4
    assert (copy.digest, copy.config) == (yard.digests[0], yard.release(1).config)
    assert copy.source == "rollback (copy of release 1)"
    assert (copy.created_by, deployment.trigger) == ("api", "rollback")
    assert yard.registry.tags[(STACK, STAGE)] == yard.digests[0]


def test_nothing_earlier_to_roll_back_to_is_a_usage_error(yard: Yard) -> None:
    with yard.services.deploy._sessions.begin() as session:
        for row in session.scalars(select(Deployment).where(Deployment.number == 1)):
            row.status = "FAILED"
    with pytest.raises(UsageError, match="no earlier completed release") as caught:
        yard.services.releases.rollback_target(STACK, STAGE)
    assert "--to N" in (caught.value.hint or "")


def test_the_controllers_rollback_copies_and_queues_in_one_step(yard: Yard) -> None:
    copy = yard.services.releases.roll_back(STACK, STAGE, 1, "rollback: deployment 3 failed")
    assert (copy.number, copy.digest, copy.created_by) == (4, yard.digests[0], "controller")
    assert copy.source == "rollback: deployment 3 failed (copy of release 1)"
    queued = yard.deployments()[-1]
    assert (queued.release_number, queued.status, queued.trigger) == (
        4,
        "QUEUED",
        "automatic rollback",
    )
    assert queued.log_path.endswith(f"deployments/{STACK}/{STAGE}/3.log")
    assert yard.registry.tags[(STACK, STAGE)] == yard.digests[0]


# -- a release whose image the registry no longer has (retention deleted its manifest)


def prune(yard: Yard, number: int) -> str:
    """Delete release ``number``'s manifest, as retention does; the engine is not asked."""
    digest = yard.digests[number - 1]
    yard.registry.delete_manifest(STACK, digest)
    return digest


def test_a_rollback_to_a_release_whose_image_was_deleted_is_refused_before_anything_moves(
    yard: Yard,
) -> None:
    digest = prune(yard, 1)
    with pytest.raises(NotFoundError) as caught:
        yard.services.redeploy.rollback(STACK, STAGE, 1)
    message, hint = caught.value.message, caught.value.hint or ""
    assert f"release 1 of {STACK}/{STAGE} cannot be deployed: its image {digest}" in message
    assert f"no longer in registry {yard.registry.endpoint} ({STACK}): retention" in message
    assert "the last 10 release(s) per stage (stackyard up --keep-releases)" in message
    assert hint.startswith("release a newer one, or build and release its commit again")
    assert yard.registry.tags[(STACK, STAGE)] == yard.digests[2]  # the tag did not move
    assert len(yard.deployments()) == 2
    with yard.services.deploy._sessions() as session:
        assert session.scalar(select(Release).where(Release.number == 4)) is None


def test_deploying_an_older_release_whose_image_was_deleted_names_its_commit(yard: Yard) -> None:
    with yard.services.deploy._sessions.begin() as session:
        for row in session.scalars(select(Release).where(Release.number == 2)):
            row.commit_sha = "4fe8827c0ffee4fe8827c0ffee4fe8827c0ffee1"
    prune(yard, 2)
    with pytest.raises(NotFoundError, match="release 2 of shop/dev cannot be deployed") as caught:
        yard.services.redeploy.deploy(STACK, STAGE, 2, trigger="api")
    assert caught.value.hint == (
        "release a newer one, or rebuild commit 4fe8827c0ffe (stackyard build shop --commit "
        "4fe8827c0ffe) and release it (stackyard release shop --stage dev --commit 4fe8827c0ffe)"
    )
    assert yard.registry.tags[(STACK, STAGE)] == yard.digests[2]
    assert len(yard.deployments()) == 2


def test_deploying_the_latest_release_asks_the_registry_once(yard: Yard) -> None:
    prune(yard, 3)  # deleted by hand: retention keeps what the tag names
    with pytest.raises(NotFoundError, match="release 3 of shop/dev cannot be deployed"):
        yard.services.deploy.deploy(STACK, STAGE, None, trigger="api")
    assert len(yard.deployments()) == 2


def test_a_registry_that_does_not_answer_is_not_a_missing_image(
    yard: Yard, caplog: pytest.LogCaptureFixture
) -> None:
    yard.registry.down = True
    deployment = yard.services.deploy.deploy(STACK, STAGE, 3, trigger="api")
    assert (deployment.release_number, deployment.status) == (3, "QUEUED")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        f"registry {yard.registry.endpoint} could not tell whether it still has {STACK}@"
        f"{yard.digests[2]}"
        in line
        and "deploying anyway" in line
        for line in warned
    ), warned
