"""FakeEngine passes the Engine contract, and scripts crashes, health and time for unit tests."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from stackyard.engines.base import (
    LABEL_PLATFORM,
    Engine,
    EngineError,
    Health,
    TaskEventKind,
    TaskInfo,
    TaskLog,
    TaskSpec,
    TaskState,
)
from stackyard.engines.fake import FakeEngine, FakeSwarm
from stackyard.errors import ComponentError, UnsupportedError
from stackyard.plugins import load
from tests.engine_contract import (
    RUN,
    Collector,
    ContractImages,
    EngineContract,
    NodesContract,
    SpecFactory,
    make_task_spec,
)

SERVING = "sha256:" + "a" * 64
CRASHING = "sha256:" + "c" * 64
HEALTHY = "sha256:" + "b" * 64
SICK = "sha256:" + "d" * 64
GONE = "sha256:" + "e" * 64
REPO = "127.0.0.1:5000/app"


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeEngine:
    engine = FakeEngine(clock=clock)
    engine.behave(SERVING, output=["started on {PORT}"])
    engine.behave(CRASHING, crash_after=0, exit_code=3, output=["boom"])
    return engine


class TestFakeEngine(EngineContract):
    @pytest.fixture
    def engine(self, fake: FakeEngine) -> FakeEngine:
        return fake

    @pytest.fixture
    def images(self) -> ContractImages:
        return ContractImages(serving=f"{REPO}@{SERVING}", crashing=f"{REPO}@{CRASHING}")


class TestFakeSwarmNodes(NodesContract):
    @pytest.fixture
    def engine(self) -> FakeSwarm:
        return FakeSwarm()

    @pytest.fixture
    def make_spec(self) -> SpecFactory:
        images = ContractImages(serving=f"{REPO}@{SERVING}", crashing=f"{REPO}@{CRASHING}")
        return functools.partial(make_task_spec, images)

    @pytest.fixture
    def pinned_node(self) -> str:
        return "node-3"


def test_registered_under_the_engines_entry_point() -> None:
    assert load("engine", "fake") is FakeEngine


def test_ids_are_deterministic_and_calls_are_recorded(make_spec: SpecFactory) -> None:
    fake = FakeEngine()
    spec = make_spec(image=f"{REPO}@{SERVING}")
    assert fake.start(spec).id == "fake-0001"
    fake.stop("fake-0001", timeout=2.5)
    fake.remove("fake-0001")
    assert fake.calls == [
        ("start", (spec,)),
        ("stop", ("fake-0001", 2.5)),
        ("remove", ("fake-0001",)),
    ]
    assert fake.calls_to("stop") == [("fake-0001", 2.5)]
    assert fake.task_ids == []


def test_crash_after_seconds_follows_the_clock(
    fake: FakeEngine, clock: Clock, make_spec: SpecFactory
) -> None:
    fake.behave(SERVING, crash_after=30, exit_code=2)
    task_id = fake.start(make_spec(image=f"{REPO}@{SERVING}")).id
    clock.advance(29)
    assert fake.inspect(task_id).state is TaskState.RUNNING
    crash_time = fake.inspect(task_id).started_at + timedelta(seconds=30)  # type: ignore[operator]
    clock.advance(5)
    info = fake.inspect(task_id)
    assert (info.state, info.exit_code, info.finished_at) == (TaskState.EXITED, 2, crash_time)


def test_health_starts_then_turns_healthy_or_unhealthy(
    fake: FakeEngine, clock: Clock, make_spec: SpecFactory
) -> None:
    fake.behave(HEALTHY, healthy=True, health_after=3)
    fake.behave(SICK, healthy=False, health_after=3, health_output="connection refused")
    good = fake.start(make_spec(image=f"{REPO}@{HEALTHY}")).id
    bad = fake.start(make_spec(image=f"{REPO}@{SICK}")).id
    assert fake.inspect(good).health is Health.STARTING
    assert fake.inspect(bad).health is Health.STARTING
    clock.advance(3)
    assert fake.inspect(good).health is Health.HEALTHY
    sick = fake.inspect(bad)
    assert (sick.health, sick.health_output) == (Health.UNHEALTHY, "connection refused")


def test_an_image_without_healthcheck_reports_no_health(
    fake: FakeEngine, make_spec: SpecFactory
) -> None:
    task_id = fake.start(make_spec(image=f"{REPO}@{SERVING}")).id
    assert fake.inspect(task_id).health is Health.NONE


def test_kill_and_set_health_script_a_running_task(
    fake: FakeEngine, make_spec: SpecFactory
) -> None:
    fake.behave(HEALTHY, healthy=True)
    task_id = fake.start(make_spec(image=f"{REPO}@{HEALTHY}")).id
    fake.set_health(task_id, Health.UNHEALTHY, "timed out")
    info = fake.inspect(task_id)
    assert (info.health, info.health_output, info.running) == (Health.UNHEALTHY, "timed out", True)
    fake.kill(task_id)
    info = fake.inspect(task_id)
    assert (info.state, info.exit_code) == (TaskState.EXITED, 137)
    fake.stop(task_id, timeout=1)
    assert fake.inspect(task_id).exit_code == 137  # stopping an exited task changes nothing


def test_a_missing_image_and_a_refused_start_raise_engine_errors(
    fake: FakeEngine, make_spec: SpecFactory
) -> None:
    fake.behave(GONE, missing=True)
    fake.behave(SICK, start_error="port is already allocated")
    with pytest.raises(EngineError, match="missing from the registry") as caught:
        fake.start(make_spec(image=f"{REPO}@{GONE}"))
    assert caught.value.hint
    assert "deleted from the registry" in caught.value.hint
    with pytest.raises(EngineError, match="port is already allocated"):
        fake.start(make_spec(image=f"{REPO}@{SICK}"))
    assert fake.list({LABEL_PLATFORM: RUN}) == []


def test_a_name_is_free_again_once_the_task_is_removed(
    fake: FakeEngine, make_spec: SpecFactory
) -> None:
    spec = make_spec(image=f"{REPO}@{SERVING}")
    first = fake.start(spec).id
    fake.remove(first)
    assert fake.start(spec).id != first


def test_emit_and_tail_of_logs(fake: FakeEngine, make_spec: SpecFactory) -> None:
    spec = make_spec(image=f"{REPO}@{SERVING}", env={"GREETING": "hi"})
    task_id = fake.start(spec).id
    fake.emit(task_id, "GET / 200", "GET /health 200")
    assert list(fake.logs(task_id)) == [f"started on {spec.port}", "GET / 200", "GET /health 200"]
    assert list(fake.logs(task_id, tail=2)) == ["GET / 200", "GET /health 200"]
    assert list(fake.logs(task_id, tail=0)) == []


def test_bridge_mode_passes_the_container_port_as_port(
    fake: FakeEngine, make_spec: SpecFactory
) -> None:
    spec = make_spec(image=f"{REPO}@{SERVING}", network_mode="bridge", container_port=8080)
    task = fake.start(spec)
    assert task.port == spec.port
    assert list(fake.logs(task.id)) == ["started on 8080"]


def test_health_changes_are_events_when_scripted_or_when_the_clock_makes_them(
    fake: FakeEngine, clock: Clock, make_spec: SpecFactory
) -> None:
    fake.behave(HEALTHY, healthy=True, health_after=3)
    with fake.events({LABEL_PLATFORM: RUN}, window=60) as stream:
        seen = Collector(stream)
        timed = fake.start(make_spec(image=f"{REPO}@{HEALTHY}")).id
        scripted = fake.start(make_spec(image=f"{REPO}@{SERVING}")).id
        fake.set_health(scripted, Health.UNHEALTHY, "timed out")
        assert seen.wait(scripted, TaskEventKind.HEALTH)
        clock.advance(3)
        assert fake.inspect(timed).health is Health.HEALTHY  # looking at it sends the event
        assert seen.wait(timed, TaskEventKind.HEALTH)
    assert seen.of(timed) == [TaskEventKind.CREATED, TaskEventKind.STARTED, TaskEventKind.HEALTH]


def test_events_of_an_unreachable_fake_are_a_component_error() -> None:
    fake = FakeEngine()
    fake.reachable = False
    with pytest.raises(ComponentError, match="unreachable"):
        fake.events({LABEL_PLATFORM: RUN}, window=1)


class Listless(Engine):
    """An engine with the mandatory calls only (no events)."""

    name: ClassVar[str] = "listless"

    def start(self, spec: TaskSpec) -> TaskInfo:
        raise NotImplementedError

    def list(self, labels: Mapping[str, str]) -> list[TaskInfo]:
        return []

    def inspect(self, task_id: str) -> TaskInfo:
        raise NotImplementedError

    def stop(self, task_id: str, timeout: float) -> None:
        pass

    def remove(self, task_id: str) -> None:
        pass

    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> TaskLog:
        return TaskLog(iter(()), lambda: None)


def test_an_engine_without_events_says_so_and_what_to_do() -> None:
    engine = Listless()
    assert not engine.supports_events
    with pytest.raises(UnsupportedError, match=r"'listless'\) cannot stream task events") as caught:
        engine.events({LABEL_PLATFORM: RUN}, window=1)
    assert "supports_events" in (caught.value.hint or "")


def test_ping_fails_when_unreachable() -> None:
    fake = FakeEngine()
    fake.ping()
    fake.reachable = False
    with pytest.raises(ComponentError, match="unreachable"):
        fake.ping()


@pytest.fixture
def make_spec() -> SpecFactory:
    """The contract's spec factory, for the fake-only tests outside the class."""
    images = ContractImages(serving=f"{REPO}@{SERVING}", crashing=f"{REPO}@{CRASHING}")
    return functools.partial(make_task_spec, images)
