"""The Engine contract: one set of tests that every engine (FakeEngine, DockerEngine) passes,
and the nodes contract that engines with nodes (FakeSwarm, SwarmEngine) pass.

A test module subclasses ``EngineContract`` and provides the ``engine`` and ``images``
fixtures; the subclass's name (``Test…``) makes pytest collect it.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_PORT,
    LABEL_STACK,
    LABEL_STAGE,
    Address,
    Engine,
    EngineError,
    NodeUse,
    Placement,
    TaskEvent,
    TaskEventKind,
    TaskEvents,
    TaskInfo,
    TaskSpec,
    TaskState,
)
from stackyard.errors import NotFoundError
from stackyard.registry_login import RegistryLogin

RUN = uuid.uuid4().hex[:8]  # this test run's platform id and name prefix
NAME_PREFIX = f"sytest-{RUN}-"


@dataclass(frozen=True)
class ContractImages:
    """Images an engine under test can start; ``login`` pulls them when it is needed."""

    serving: str  # repo@sha256:… that prints "started on $PORT" and keeps running
    crashing: str  # repo@sha256:… that prints "boom" and exits 3 on its own
    login: RegistryLogin | None = None


SpecFactory = Callable[..., TaskSpec]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_task_spec(images: ContractImages, image: str | None = None, **overrides: Any) -> TaskSpec:
    """A spec with a unique ``sytest-`` name, a free loopback port and this run's labels."""
    spec = TaskSpec(
        name=f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}",
        image=image or images.serving,
        port=free_port(),
        labels={LABEL_PLATFORM: RUN, LABEL_STACK: "contract", LABEL_STAGE: "dev"},
        stop_timeout=5,
        login=images.login,
    )
    return replace(spec, **overrides)


class Collector:
    """Reads a task event stream on a thread, until it ends; ``wait`` for what a test needs."""

    def __init__(self, stream: TaskEvents) -> None:
        self.events: list[TaskEvent] = []
        self.ended = threading.Event()
        self._changed = threading.Condition()
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            self.ended.set()

    def wait(self, task_id: str, kind: TaskEventKind, timeout: float = 30) -> bool:
        """Whether an event ``kind`` of the task came within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: kind in self.of(task_id), timeout)

    def of(self, task_id: str) -> list[TaskEventKind]:
        return [e.kind for e in list(self.events) if e.task_id == task_id]


def wait_for(check: Callable[[], TaskInfo], until: Callable[[TaskInfo], bool]) -> TaskInfo:
    """Inspect until ``until`` holds (engines report asynchronously); 30 s at most."""
    deadline = time.monotonic() + 30
    info = check()
    while not until(info):
        if time.monotonic() > deadline:
            raise AssertionError(f"task never reached the expected state: {info}")
        time.sleep(0.1)
        info = check()
    return info


class EngineContract:
    """What the deploy controller relies on, whatever engine runs the tasks."""

    @pytest.fixture
    def engine(self) -> Engine:
        raise NotImplementedError("a test module provides the engine fixture")

    @pytest.fixture
    def images(self) -> ContractImages:
        raise NotImplementedError("a test module provides the images fixture")

    @pytest.fixture
    def make_spec(self, images: ContractImages) -> SpecFactory:
        return functools.partial(make_task_spec, images)

    @pytest.fixture
    def task_host(self) -> Callable[[TaskInfo], str]:
        """Where a task of this engine answers: the engine's loopback, or its node's address."""
        return lambda _task: "127.0.0.1"

    def test_start_from_a_digest_runs_with_labels_and_port(
        self, engine: Engine, make_spec: SpecFactory
    ) -> None:
        spec = make_spec()
        started = engine.start(spec)
        info = engine.inspect(started.id)
        assert info.state is TaskState.RUNNING
        assert info.running
        assert info.name == spec.name
        assert info.image == spec.image
        assert info.digest == spec.image.partition("@")[2]
        assert info.port == spec.port
        assert info.labels[LABEL_PORT] == str(spec.port)
        assert {k: info.labels[k] for k in spec.labels} == dict(spec.labels)
        assert info.started_at is not None
        assert info.started_at.tzinfo is not None
        assert info.exit_code is None

    def test_a_task_reports_its_address(
        self, engine: Engine, make_spec: SpecFactory, task_host: Callable[[TaskInfo], str]
    ) -> None:
        spec = make_spec()
        started = engine.start(spec)
        host = task_host(started)
        assert started.address == Address(host, spec.port)
        assert str(engine.inspect(started.id).address) == f"{host}:{spec.port}"

    def test_events_follow_a_task_from_start_to_removal(
        self, engine: Engine, make_spec: SpecFactory
    ) -> None:
        assert engine.supports_events
        spec = make_spec()
        elsewhere = make_spec(labels={**spec.labels, LABEL_STAGE: "elsewhere"})
        with engine.events({LABEL_PLATFORM: RUN, LABEL_STAGE: "dev"}, window=60) as stream:
            seen = Collector(stream)
            other_id = engine.start(elsewhere).id
            task_id = engine.start(spec).id
            engine.stop(task_id, timeout=5)
            engine.remove(task_id)
            assert seen.wait(task_id, TaskEventKind.REMOVED), seen.events
        assert seen.of(task_id) == [
            TaskEventKind.CREATED,
            TaskEventKind.STARTED,
            TaskEventKind.EXITED,
            TaskEventKind.REMOVED,
        ], seen.events
        assert seen.of(other_id) == []  # its labels do not match
        first = next(e for e in seen.events if e.task_id == task_id)
        assert first.labels[LABEL_STAGE] == "dev"
        assert first.labels[LABEL_PLATFORM] == RUN

    def test_events_report_a_task_that_exits_on_its_own(
        self, engine: Engine, images: ContractImages, make_spec: SpecFactory
    ) -> None:
        with engine.events({LABEL_PLATFORM: RUN}, window=60) as stream:
            seen = Collector(stream)
            task_id = engine.start(make_spec(image=images.crashing)).id
            wait_for(lambda: engine.inspect(task_id), lambda i: i.state is TaskState.EXITED)
            assert seen.wait(task_id, TaskEventKind.EXITED), seen.events

    def test_closing_an_event_stream_ends_it(self, engine: Engine) -> None:
        stream = engine.events({LABEL_PLATFORM: RUN}, window=300)
        seen = Collector(stream)
        stream.close()
        assert seen.ended.wait(10)

    def test_an_event_stream_ends_after_its_window(self, engine: Engine) -> None:
        seen = Collector(engine.events({LABEL_PLATFORM: RUN}, window=1))
        assert seen.ended.wait(10)

    def test_a_new_event_stream_does_not_replay_older_events(
        self, engine: Engine, make_spec: SpecFactory
    ) -> None:
        task_id = engine.start(make_spec()).id
        engine.stop(task_id, timeout=5)
        with engine.events({LABEL_PLATFORM: RUN}, window=60) as stream:
            seen = Collector(stream)
            engine.remove(task_id)
            assert seen.wait(task_id, TaskEventKind.REMOVED), seen.events
        assert seen.of(task_id) == [TaskEventKind.REMOVED]

    def test_a_tag_reference_is_refused(self, engine: Engine, make_spec: SpecFactory) -> None:
        repository = make_spec().image.partition("@")[0]
        spec = make_spec(image=f"{repository}:latest")
        with pytest.raises(EngineError, match="digest, never a tag") as caught:
            engine.start(spec)
        assert f"{repository}:latest" in str(caught.value)
        assert spec.name not in {task.name for task in engine.list({LABEL_PLATFORM: RUN})}

    def test_list_filters_by_labels(self, engine: Engine, make_spec: SpecFactory) -> None:
        dev = make_spec()
        prod = make_spec(labels={**dev.labels, LABEL_STAGE: "prod"})
        dev_id = engine.start(dev).id
        prod_id = engine.start(prod).id
        assert [t.id for t in engine.list({LABEL_PLATFORM: RUN, LABEL_STAGE: "prod"})] == [prod_id]
        both = {t.id for t in engine.list({LABEL_PLATFORM: RUN, LABEL_STACK: "contract"})}
        assert {dev_id, prod_id} <= both
        assert engine.list({LABEL_PLATFORM: RUN, LABEL_STAGE: "nowhere"}) == []
        assert engine.list({LABEL_PLATFORM: f"not-{RUN}"}) == []

    def test_inspect_of_an_unknown_task_is_not_found(self, engine: Engine) -> None:
        with pytest.raises(NotFoundError, match="no-such-task"):
            engine.inspect("no-such-task")

    def test_stop_leaves_an_exited_task_with_its_exit_code(
        self, engine: Engine, make_spec: SpecFactory
    ) -> None:
        task_id = engine.start(make_spec()).id
        engine.stop(task_id, timeout=5)
        info = engine.inspect(task_id)
        assert info.state is TaskState.EXITED
        assert not info.running
        assert info.exit_code is not None
        assert info.finished_at is not None

    def test_stop_twice_and_stop_of_a_gone_task_are_fine(
        self, engine: Engine, make_spec: SpecFactory
    ) -> None:
        task_id = engine.start(make_spec()).id
        engine.stop(task_id, timeout=5)
        engine.stop(task_id, timeout=5)
        engine.remove(task_id)
        engine.stop(task_id, timeout=5)

    def test_remove_then_inspect_is_not_found(self, engine: Engine, make_spec: SpecFactory) -> None:
        task_id = engine.start(make_spec()).id
        engine.stop(task_id, timeout=5)
        engine.remove(task_id)
        with pytest.raises(NotFoundError):
            engine.inspect(task_id)
        assert task_id not in {t.id for t in engine.list({LABEL_PLATFORM: RUN})}
        engine.remove(task_id)

    def test_remove_of_a_running_task_removes_it(
        self, engine: Engine, make_spec: SpecFactory
    ) -> None:
        task_id = engine.start(make_spec()).id
        engine.remove(task_id)
        with pytest.raises(NotFoundError):
            engine.inspect(task_id)

    def test_logs_contain_the_apps_output(self, engine: Engine, make_spec: SpecFactory) -> None:
        spec = make_spec()
        task_id = engine.start(spec).id
        deadline = time.monotonic() + 30  # a cluster's logs come from the node, a bit later
        while (lines := list(engine.logs(task_id))) == [] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"started on {spec.port}" in lines
        assert list(engine.logs(task_id, tail=1)) == lines[-1:]

    def test_logs_of_an_unknown_task_are_not_found(self, engine: Engine) -> None:
        with pytest.raises(NotFoundError):
            list(engine.logs("no-such-task"))

    def test_a_task_that_exits_on_its_own_reports_its_exit_code(
        self, engine: Engine, images: ContractImages, make_spec: SpecFactory
    ) -> None:
        task_id = engine.start(make_spec(image=images.crashing)).id
        info = wait_for(lambda: engine.inspect(task_id), lambda i: i.state is TaskState.EXITED)
        assert info.exit_code == 3
        assert "boom" in list(engine.logs(task_id))

    def test_two_tasks_with_the_same_name_are_refused(
        self, engine: Engine, make_spec: SpecFactory
    ) -> None:
        spec = make_spec()
        first = engine.start(spec)
        with pytest.raises(EngineError, match=spec.name):
            engine.start(replace(spec, port=free_port()))
        assert [t.id for t in engine.list({LABEL_PLATFORM: RUN}) if t.name == spec.name] == [
            first.id
        ]


class NodesContract:
    """What placement and ``stackyard nodes`` rely on, on an engine with nodes (the fake
    swarm and the real one alike). A module subclasses it and provides ``engine``,
    ``make_spec`` (as EngineContract's) and ``pinned_node``: a ready node to pin tasks to."""

    @pytest.fixture
    def pinned_node(self) -> str:
        raise NotImplementedError("a test module provides the node to pin tasks to")

    def test_each_node_reports_its_address_and_resources(self, engine: Engine) -> None:
        assert engine.supports_nodes
        nodes = engine.nodes()
        assert nodes
        assert len({node.id for node in nodes}) == len(nodes)
        for node in nodes:
            assert node.address.startswith("127."), node  # loopback nodes in tests
            assert node.cpu > 0
            assert node.memory > 0

    def test_node_use_counts_a_pinned_task_and_its_reservations_until_it_is_removed(
        self, engine: Engine, make_spec: SpecFactory, pinned_node: str
    ) -> None:
        before = engine.node_use().get(pinned_node, NodeUse())
        spec = make_spec(placement=Placement(node=pinned_node), cpu=0.25, memory=48 * 1024**2)
        task = engine.start(spec)
        assert task.node == pinned_node
        during = engine.node_use()[pinned_node]
        assert during.tasks == before.tasks + 1
        assert during.cpu == pytest.approx(before.cpu + 0.25)
        assert during.memory == before.memory + 48 * 1024**2
        engine.remove(task.id)
        after = engine.node_use().get(pinned_node, NodeUse())
        assert after.tasks == before.tasks
        assert after.cpu == pytest.approx(before.cpu)
