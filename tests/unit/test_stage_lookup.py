"""An unknown ``--stage`` is an error naming the valid stages, for every stage-scoped read."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from stackyard.api.app import ApiContext, create_app
from stackyard.engines.fake import FakeEngine
from stackyard.errors import NotFoundError
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.stacks.stages import known_stages
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, Release, Stack

DIGEST = "sha256:" + "d" * 64
TOKEN = "t0ken-for-tests"
CONFIG = {"stages": [{"name": "dev"}, {"name": "qa"}, {"name": "live"}]}


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    database = open_database(f"sqlite:///{tmp_path / 'stackyard.db'}")
    migrate(database)
    yield session_factory(database)
    database.dispose()


@pytest.fixture
def services(tmp_path: Path, sessions: sessionmaker[Session]) -> Services:
    settings = Settings(data_dir=tmp_path)
    registry = RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password")
    return build_services(settings, sessions, registry, engine=FakeEngine(), router=FakeRouter())


def add_stack(
    sessions: sessionmaker[Session],
    *,
    builds: Sequence[tuple[str, dict[str, Any] | None]] = (),
    releases: Sequence[str] = (),
) -> int:
    with sessions.begin() as session:
        stack = Stack(name="web", repo="/repo")
        session.add(stack)
        session.flush()
        for number, (status, config) in enumerate(builds, start=1):
            session.add(
                Build(stack_id=stack.id, number=number, status=status, config=config, digest=DIGEST)
            )
        for number, stage in enumerate(releases, start=1):
            session.add(Release(stack_id=stack.id, stage=stage, number=number, digest=DIGEST))
        return stack.id


def stage_reads(services: Services) -> dict[str, Callable[[str], object]]:
    return {
        "releases": lambda stage: services.releases.list("web", stage),
        "release": lambda stage: services.releases.get("web", stage, 1),
        "deployments": lambda stage: services.deploy.list("web", stage),
        "deployment": lambda stage: services.deploy.get("web", stage, 1),
        "tasks": lambda stage: services.deploy.tasks("web", stage),
        "check": lambda stage: services.deploy.check("web", stage),
        "url": lambda stage: services.deploy.url("web", stage),
    }


@pytest.mark.parametrize(
    "read", ["releases", "release", "deployments", "deployment", "tasks", "check", "url"]
)
def test_unknown_stage_names_the_valid_ones(
    services: Services, sessions: sessionmaker[Session], read: str
) -> None:
    add_stack(sessions, builds=[("SUCCEEDED", CONFIG)])
    with pytest.raises(NotFoundError, match=r"no stage 'nope' \(stages: dev, qa, live\)"):
        stage_reads(services)[read]("nope")


def test_known_stage_without_records_is_an_empty_answer(
    services: Services, sessions: sessionmaker[Session]
) -> None:
    add_stack(sessions, builds=[("SUCCEEDED", CONFIG)])
    assert services.releases.list("web", "qa") == []
    assert services.deploy.list("web", "qa") == []
    assert services.deploy.tasks("web", "qa") == []
    assert services.deploy.check("web", "qa").release is None
    assert services.deploy.url("web", "qa").url is None


def test_release_of_an_unknown_stage_still_errors(
    services: Services, sessions: sessionmaker[Session]
) -> None:
    add_stack(sessions, builds=[("SUCCEEDED", CONFIG)])
    with pytest.raises(NotFoundError, match=r"no stage 'nope' \(stages: dev, qa, live\)"):
        services.releases.release("web", "nope")


def test_stages_come_from_the_newest_successful_build(sessions: sessionmaker[Session]) -> None:
    newer = {"stages": [{"name": "dev"}, {"name": "prod"}]}
    stack_id = add_stack(
        sessions, builds=[("SUCCEEDED", CONFIG), ("SUCCEEDED", newer), ("FAILED", {"stages": []})]
    )
    with sessions() as session:
        assert known_stages(session, stack_id) == ["dev", "prod"]


def test_a_build_without_stackyard_yml_has_the_default_stages(
    sessions: sessionmaker[Session],
) -> None:
    stack_id = add_stack(sessions, builds=[("SUCCEEDED", None)])
    with sessions() as session:
        assert known_stages(session, stack_id) == ["dev", "staging", "prod"]


def test_without_a_build_the_stages_that_have_releases(
    services: Services, sessions: sessionmaker[Session]
) -> None:
    add_stack(sessions, builds=[("FAILED", CONFIG)], releases=["qa", "dev", "qa"])
    assert len(services.releases.list("web", "qa")) == 2
    with pytest.raises(NotFoundError, match=r"\(stages: qa, dev\)"):
        services.deploy.tasks("web", "live")


def test_a_stage_removed_from_stackyard_yml_keeps_its_history(
    sessions: sessionmaker[Session],
) -> None:
    stack_id = add_stack(sessions, builds=[("SUCCEEDED", CONFIG)], releases=["old", "dev"])
    with sessions() as session:
        assert known_stages(session, stack_id) == ["dev", "qa", "live", "old"]


def test_no_build_and_no_release_says_to_build_first(
    services: Services, sessions: sessionmaker[Session]
) -> None:
    add_stack(sessions)
    with pytest.raises(NotFoundError, match="no successful build yet") as caught:
        services.deploy.check("web", "dev")
    assert caught.value.hint == "build it first: stackyard build web"


def test_api_answers_404_with_the_valid_stages(
    tmp_path: Path, services: Services, sessions: sessionmaker[Session]
) -> None:
    add_stack(sessions, builds=[("SUCCEEDED", CONFIG)])
    settings = Settings(data_dir=tmp_path)
    client = TestClient(create_app(ApiContext(settings, TOKEN, {}, services)))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("releases", "deployments", "tasks", "check", "url"):
        response = client.get(f"/api/v1/stacks/web/stages/nope/{path}", headers=headers)
        assert response.status_code == 404, path
        assert "(stages: dev, qa, live)" in response.json()["error"], path
