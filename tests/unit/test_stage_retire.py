"""`stackyard stages remove`: a stage stackyard.yml no longer lists is stopped for good.

A stage left out of stackyard.yml keeps running (a mistake there must not take a serving
stage down); retiring it stops its loop, removes its tasks and route, keeps its history,
and keeps it stopped across a restart of the control plane, until a release brings it
back. The controller and the store are real; engine and router are the fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from stackyard.deploy.service import DeployService
from stackyard.errors import NotFoundError, StackyardError, UsageError
from stackyard.pipeline.releases import _add_release
from stackyard.settings import Settings
from stackyard.stacks.stages import known_stages
from stackyard.statuses import BuildStatus
from stackyard.store.models import Build, Release, RetiredStage, StageRoute
from tests.unit.controller_fixtures import KEY, ROUTE_NAME, STACK, STAGE, V1, Yard, make_yard


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    yield from make_yard(tmp_path)


def built(yard: Yard, *stages: str) -> None:
    """A successful build whose stackyard.yml lists ``stages``."""
    with yard.sessions.begin() as session:
        number = 1 + len(list(session.scalars(select(Build.id))))
        session.add(
            Build(
                stack_id=yard.stack_id,
                number=number,
                status=BuildStatus.SUCCEEDED,
                config={"stages": [{"name": name} for name in stages]},
            )
        )


def service(yard: Yard) -> DeployService:
    return DeployService(yard.sessions, yard.controller, Settings(data_dir=yard.tmp / "data"))


def test_a_stage_stackyard_yml_still_lists_is_refused_naming_the_file(yard: Yard) -> None:
    yard.ship(V1)
    with pytest.raises(UsageError) as refused:
        service(yard).retire(STACK, STAGE, by="ann")  # no build: the default stages list it
    assert f"stage {STAGE} of {STACK} is in stackyard.yml (by default)" in refused.value.message
    built(yard, STAGE, "prod")
    with pytest.raises(UsageError, match=r"in stackyard.yml \(at build 1\)") as refused:
        service(yard).retire(STACK, STAGE, by="ann")
    assert "remove it from stackyard.yml, push" in str(refused.value.hint)
    assert yard.releases_running() == ["1"]  # nothing changed
    with pytest.raises(NotFoundError, match="no stage 'qa'"):
        service(yard).retire(STACK, "qa", by="ann")


def test_a_stage_the_file_dropped_is_stopped_and_stays_stopped(yard: Yard) -> None:
    yard.ship(V1, replicas=2)
    assert ROUTE_NAME in yard.router.served
    built(yard, "prod")  # the newest stackyard.yml no longer lists dev
    with yard.sessions() as session:
        assert known_stages(session, yard.stack_id) == ["prod", STAGE]  # still runs

    done = service(yard).retire(STACK, STAGE, by="ann")
    assert (done.stack, done.stage, done.left) == (STACK, STAGE, [])
    assert yard.engine.task_ids == []
    assert ROUTE_NAME not in yard.router.served
    with yard.sessions() as session:
        assert known_stages(session, yard.stack_id) == ["prod"]
        assert session.scalar(select(StageRoute.id)) is None
        assert len(list(session.scalars(select(Release.id)))) == 1  # its history stays
        retired = session.scalars(select(RetiredStage)).one()
        assert (retired.stage, retired.retired_by) == (STAGE, "ann")
    with pytest.raises(NotFoundError):
        service(yard).retire(STACK, STAGE, by="ann")  # once is enough

    yard.restart_controller()
    yard.controller.start()  # adopts every stage with releases, but not this one
    assert KEY not in yard.controller._loops
    assert yard.engine.task_ids == []


def test_a_release_to_it_makes_it_a_stage_again(yard: Yard) -> None:
    yard.ship(V1)
    built(yard, "prod")
    service(yard).retire(STACK, STAGE, by="ann")
    built(yard, STAGE, "prod")  # listed again
    with yard.sessions.begin() as session:
        old = session.scalars(select(Release)).one()
        _add_release(
            session,
            old,
            stack_id=yard.stack_id,
            stage=STAGE,
            config=old.config,
            source="test",
            origin="promotion",
            created_by="ann",
        )
    with yard.sessions() as session:
        assert session.scalar(select(RetiredStage.id)) is None
        assert known_stages(session, yard.stack_id) == [STAGE, "prod"]


def test_what_a_retirement_could_not_remove_is_swept(yard: Yard) -> None:
    """An engine that refuses while the stage is retired leaves its tasks; the sweep
    removes them on its second look, as a deleted stack's."""
    yard.ship(V1, replicas=2)
    built(yard, "prod")
    removing = yard.engine.remove

    def refused(task_id: str) -> None:
        raise StackyardError(f"cannot remove task {task_id}: the engine did not answer")

    yard.engine.remove = refused  # type: ignore[method-assign]
    done = service(yard).retire(STACK, STAGE, by="ann")
    yard.engine.remove = removing  # type: ignore[method-assign]
    assert len(done.left) == 1
    assert f"stage {STAGE} of {STACK}: some of what it ran could not be removed" in done.left[0]
    assert len(yard.engine.task_ids) == 2
    yard.resync()
    yard.controller.sweep_orphans()  # the first look only notes them
    assert len(yard.engine.task_ids) == 2
    yard.controller.sweep_orphans()
    assert yard.engine.task_ids == []
