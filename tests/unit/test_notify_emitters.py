"""Where events come from: each is written to the outbox by the code that applies the change
(the deployment executor, a run's gate, a build's end), in the same transaction or right
after it. No worker runs here: these read the outbox rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.notify.events import SUBSCRIBABLE, EventKind
from stackyard.pipeline.builds.records import BuildRecords
from stackyard.pipeline.runs.plan import Gate, StepKind, StepState
from stackyard.pipeline.runs.records import RunRecords
from stackyard.statuses import BuildStatus
from stackyard.store.models import NotificationChannel, NotificationDelivery, NotificationEvent
from tests.unit.controller_fixtures import STACK, STAGE, V1, V2, Yard, make_yard


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    yield from make_yard(tmp_path)


def listen(sessions: sessionmaker[Session], stack_id: int, *kinds: EventKind) -> None:
    """A channel of the stack that listens to ``kinds`` (every event without any)."""
    with sessions.begin() as session:
        session.add(
            NotificationChannel(
                stack_id=stack_id,
                number=1,
                kind="slack",
                shown="https://hooks.slack.com/…",
                settings={},
                sealed="",
                events=[str(k) for k in kinds or SUBSCRIBABLE],
            )
        )


def events(sessions: sessionmaker[Session]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, stage, notice) of every event, oldest first, each with one PENDING delivery."""
    with sessions() as session:
        rows = session.scalars(select(NotificationEvent).order_by(NotificationEvent.id)).all()
        deliveries = session.scalars(select(NotificationDelivery)).all()
    assert sorted(d.event_id for d in deliveries) == [r.id for r in rows]
    assert {d.status for d in deliveries} <= {"PENDING"}
    return [(r.kind, r.stage, r.notice) for r in rows]


def fields(notice: dict[str, Any]) -> dict[str, str]:
    return dict(notice["fields"])


def test_a_completed_deployment_is_told_with_its_release_and_digest(yard: Yard) -> None:
    listen(yard.sessions, yard.stack_id)
    number = yard.ship(V1)
    [(kind, stage, notice)] = events(yard.sessions)
    assert (kind, stage) == ("completed", STAGE)
    assert notice["title"] == f"{STACK}/{STAGE}: deployment {number} COMPLETED"
    assert fields(notice)["Digest"] == V1
    assert fields(notice)["Release"] == "1"


def test_a_failed_deployment_that_was_rolled_back_says_why_and_where_it_went_back(
    yard: Yard,
) -> None:
    yard.ship(V1)
    listen(yard.sessions, yard.stack_id, EventKind.ROLLED_BACK, EventKind.FAILED)
    yard.engine.behave(V2, crash_after=0, exit_code=3, output=["boom: missing DATABASE_URL"])
    number = yard.deploy(yard.release(V2))
    yard.run_until(lambda: yard.status(number) == "FAILED")

    [(kind, stage, notice)] = events(yard.sessions)
    assert (kind, stage) == ("rolled-back", STAGE)
    assert notice["title"] == (
        f"{STACK}/{STAGE}: deployment {number} FAILED; rolled back to release 1"
    )
    assert "exited with status 3" in notice["text"]
    assert "boom: missing DATABASE_URL" in notice["text"]
    assert fields(notice)["Back to digest"] == V1
    assert fields(notice)["Back to release"] == "1"
    assert fields(notice)["New release"] == "3"  # the copy ReleaseService made
    assert fields(notice)["Digest"] == V2


def test_a_failed_first_deployment_says_there_was_nothing_to_go_back_to(yard: Yard) -> None:
    listen(yard.sessions, yard.stack_id)
    yard.engine.behave(V1, crash_after=0, exit_code=1)
    number = yard.deploy(yard.release(V1))
    yard.run_until(lambda: yard.status(number) == "FAILED")

    [(kind, _, notice)] = events(yard.sessions)
    assert kind == "failed"
    assert fields(notice)["Rollback"] == "no earlier COMPLETED release to go back to"
    assert notice["text"] == yard.deployment(number).reason


def test_a_rollback_that_fails_is_told_as_a_failure(yard: Yard) -> None:
    yard.ship(V1)
    listen(yard.sessions, yard.stack_id)

    def refuse(*_args: object) -> Any:
        from stackyard.errors import PermanentError

        raise PermanentError("the registry has no manifest sha256:1111")

    yard.controller.rollback = refuse
    yard.engine.behave(V2, crash_after=0, exit_code=3)
    number = yard.deploy(yard.release(V2))
    yard.run_until(lambda: yard.status(number) == "FAILED")
    [(kind, _, notice)] = events(yard.sessions)
    assert kind == "failed"
    assert fields(notice)["Rollback"] == (
        "rollback to release 1 failed: the registry has no manifest sha256:1111"
    )


def test_a_replaced_task_is_told_once_in_the_quiet_time(yard: Yard) -> None:
    yard.ship(V1, replicas=2)
    listen(yard.sessions, yard.stack_id, EventKind.HEALED)
    first, second = yard.engine.task_ids
    yard.engine.kill(first, exit_code=137)
    yard.tick(2)
    yard.engine.kill(second, exit_code=137)
    yard.tick(2)
    assert len(yard.events("heal")) == 2  # every replacement is in the events table
    [(kind, stage, notice)] = events(yard.sessions)
    assert (kind, stage) == ("healed", STAGE)
    assert "exited with status 137" in notice["text"]


def test_a_stack_without_channels_gets_no_rows(yard: Yard) -> None:
    yard.engine.behave(V1, crash_after=0, exit_code=1)
    number = yard.deploy(yard.release(V1))
    yard.run_until(lambda: yard.status(number) == "FAILED")
    assert events(yard.sessions) == []


def test_an_opened_approval_gate_is_told_with_the_command_and_the_link(
    yard: Yard, tmp_path: Path
) -> None:
    listen(yard.sessions, yard.stack_id, EventKind.APPROVAL)
    records = RunRecords(yard.sessions, tmp_path / "logs", lambda _stack: [])
    gate = StepState(1, StepKind.GATE, "prod", message=str(Gate.APPROVAL))
    run_id, number = records.create(
        STACK, trigger="test", ref=None, commit="c0ffee" * 7, before=None, source_url=None,
        stages=[gate],
    )  # fmt: skip
    records.open_gate(run_id, 1)

    [(kind, stage, notice)] = events(yard.sessions)
    assert (kind, stage) == ("approval", "prod")
    assert notice["title"] == f"{STACK}: run {number} waits for an approval to enter prod"
    assert fields(notice)["Approve"] == f"stackyard approve {STACK} --stage prod"
    assert fields(notice)["Commit"] == "c0ffeec0ffee"
    assert notice["path"] == f"/ui/stacks/{STACK}"


def test_a_failed_build_is_told_with_its_error_and_log_command(yard: Yard, tmp_path: Path) -> None:
    listen(yard.sessions, yard.stack_id, EventKind.BUILD_FAILED)
    records = BuildRecords(yard.sessions, tmp_path / "logs")
    build = records.create(STACK, None)
    records.start(STACK, build.number)
    records.finish(STACK, build.number, BuildStatus.FAILED, error="build.yml FAILED in build")
    ok = records.create(STACK, None)
    records.finish(STACK, ok.number, BuildStatus.SUCCEEDED, digest=V1)

    [(kind, stage, notice)] = events(yard.sessions)
    assert (kind, stage) == ("build-failed", "")
    assert notice["text"] == "build.yml FAILED in build"
    assert fields(notice)["Log"] == f"stackyard logs {STACK} --build {build.number}"
