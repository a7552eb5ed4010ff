"""TaskWatch: one list of the engine's tasks, kept current by its events, for every stage.

The steps (``resync``, ``handle``, ``put``, ``drop``) are driven directly against
FakeEngine; two tests run the watch's thread and wait (bounded) for a stage's wake-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import ClassVar

import pytest

from stackyard.deploy.keys import StageKey
from stackyard.deploy.taskwatch import TaskWatch, retry_pause
from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_PORT,
    LABEL_STACK,
    LABEL_STAGE,
    NodeUse,
    Placement,
    TaskEvent,
    TaskEventKind,
    TaskInfo,
    TaskSpec,
)
from stackyard.engines.fake import FakeEngine, FakeSwarm
from stackyard.errors import ComponentError

PLATFORM = "watched"
DEV = StageKey("shop", "dev")
PROD = StageKey("shop", "prod")
IMAGE = "127.0.0.1:5000/shop@sha256:" + "a" * 64
SPEC_MEMORY = 256 * 1024 * 1024  # a TaskSpec's memory by default


def spec(key: StageKey, n: int, platform: str = PLATFORM) -> TaskSpec:
    labels = {LABEL_PLATFORM: platform, LABEL_STACK: key.stack, LABEL_STAGE: key.stage}
    return TaskSpec(name=f"t-{key.stage}-{n}", image=IMAGE, port=21000 + n, labels=labels)


class Woken:
    """Records the stages a watch wakes; ``wait`` for one (bounded)."""

    def __init__(self) -> None:
        self.keys: list[StageKey] = []
        self._changed = threading.Condition()

    def __call__(self, key: StageKey) -> None:
        with self._changed:
            self.keys.append(key)
            self._changed.notify_all()

    def wait(self, key: StageKey, timeout: float = 10) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: key in self.keys, timeout)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def woken() -> Woken:
    return Woken()


@pytest.fixture
def watch(engine: FakeEngine, woken: Woken) -> Iterator[TaskWatch]:
    watched = TaskWatch(engine, PLATFORM, woken, resync=30, retry=0.05)
    try:
        yield watched
    finally:
        watched.stop()


def ids(tasks: list[TaskInfo]) -> list[str]:
    return [t.id for t in tasks]


def test_nothing_is_known_before_the_first_listing(watch: TaskWatch) -> None:
    with pytest.raises(ComponentError, match="not been listed yet"):
        watch.tasks(DEV)


def test_one_listing_serves_every_stage_and_only_the_platforms_tasks(
    engine: FakeEngine, watch: TaskWatch, woken: Woken
) -> None:
    dev = engine.start(spec(DEV, 1)).id
    prod = engine.start(spec(PROD, 2)).id
    engine.start(spec(DEV, 3, platform="another"))
    watch.resync()
    assert ids(watch.tasks(DEV)) == [dev]
    assert ids(watch.tasks(PROD)) == [prod]
    assert sorted(woken.keys, key=str) == [DEV, PROD]
    assert [args for args in engine.calls_to("list")] == [({LABEL_PLATFORM: PLATFORM},)]
    watch.tasks(DEV)
    watch.tasks(PROD)
    assert len(engine.calls_to("list")) == 1  # reading the cache asks the engine nothing


def test_an_event_updates_the_task_and_wakes_only_its_stage(
    engine: FakeEngine, watch: TaskWatch, woken: Woken
) -> None:
    dev = engine.start(spec(DEV, 1)).id
    engine.start(spec(PROD, 2))
    watch.resync()
    woken.keys.clear()
    engine.kill(dev, exit_code=137)
    watch.handle(TaskEvent(dev, TaskEventKind.EXITED, {}))
    (task,) = watch.tasks(DEV)
    assert (task.running, task.exit_code) == (False, 137)
    assert woken.keys == [DEV]
    watch.handle(TaskEvent(dev, TaskEventKind.EXITED, {}))  # nothing new: no wake-up
    assert woken.keys == [DEV]


def test_a_removed_task_is_forgotten_and_a_late_report_of_it_ignored(
    engine: FakeEngine, watch: TaskWatch
) -> None:
    info = engine.start(spec(DEV, 1))
    watch.resync()
    engine.remove(info.id)
    watch.handle(TaskEvent(info.id, TaskEventKind.REMOVED, {}))
    watch.put(info)  # an inspect that started before the removal answers late
    assert watch.tasks(DEV) == []


def test_an_event_for_a_task_already_gone_forgets_it(engine: FakeEngine, watch: TaskWatch) -> None:
    task_id = engine.start(spec(DEV, 1)).id
    watch.resync()
    engine.remove(task_id)
    watch.handle(TaskEvent(task_id, TaskEventKind.EXITED, {}))  # inspect: not found
    assert watch.tasks(DEV) == []


class RacingEngine(FakeEngine):
    """A fake whose listing lets something happen after it looked (as docker's can)."""

    during_list: ClassVar[list[TaskSpec]] = []
    watch: TaskWatch | None = None

    def list(self, labels: dict[str, str]) -> list[TaskInfo]:  # type: ignore[override]
        listed = super().list(labels)
        for started in self.during_list:
            if self.watch is not None:
                self.watch.put(self.start(started), wake=False)
        self.during_list.clear()
        return listed


def test_a_task_started_while_the_listing_ran_is_kept(woken: Woken) -> None:
    engine = RacingEngine()
    watch = TaskWatch(engine, PLATFORM, woken)
    engine.watch = watch
    first = engine.start(spec(DEV, 1)).id
    RacingEngine.during_list.append(spec(DEV, 2))
    watch.resync()
    assert len(watch.tasks(DEV)) == 2
    assert first in ids(watch.tasks(DEV))
    watch.resync()  # and the next listing shows it anyway
    assert len(watch.tasks(DEV)) == 2


def test_an_engine_that_stops_answering_makes_the_tasks_unknown_until_listed_again(
    engine: FakeEngine, watch: TaskWatch
) -> None:
    engine.start(spec(DEV, 1))
    watch.resync()
    engine.reachable = False
    with pytest.raises(ComponentError):
        watch.resync()
    with pytest.raises(ComponentError, match="unreachable"):
        watch.tasks(DEV)
    engine.reachable = True
    watch.resync()
    assert len(watch.tasks(DEV)) == 1


def test_the_thread_lists_at_start_then_follows_the_events(
    engine: FakeEngine, watch: TaskWatch, woken: Woken
) -> None:
    task_id = engine.start(spec(DEV, 1)).id
    watch.start()
    assert ids(watch.tasks(DEV)) == [task_id]  # listed before start() returned
    woken.keys.clear()
    engine.kill(task_id)  # a "die" event, as docker sends one
    assert woken.wait(DEV)
    assert not watch.tasks(DEV)[0].running
    assert len(engine.calls_to("list")) == 1  # the event did it, not a listing


class PollOnly(FakeEngine):
    supports_events: ClassVar[bool] = False


def test_an_engine_without_events_is_listed_every_poll(woken: Woken) -> None:
    engine = PollOnly()
    watch = TaskWatch(engine, PLATFORM, woken, poll=0.05)
    watch.start()
    try:
        assert watch.tasks(DEV) == []
        engine.start(spec(DEV, 1))
        assert woken.wait(DEV)
        assert len(watch.tasks(DEV)) == 1
        assert engine.calls_to("events") == []
    finally:
        watch.stop()


def test_stop_ends_the_watch_at_once(engine: FakeEngine, woken: Woken) -> None:
    watch = TaskWatch(engine, PLATFORM, woken, resync=300)
    watch.start()
    watch.stop()
    assert watch._thread is not None
    assert not watch._thread.is_alive()


def test_a_task_without_stage_labels_belongs_to_no_stage(
    engine: FakeEngine, watch: TaskWatch
) -> None:
    bare = TaskSpec(name="bare", image=IMAGE, port=21999, labels={LABEL_PLATFORM: PLATFORM})
    engine.start(bare)
    watch.resync()
    assert watch.tasks(DEV) == []
    assert [t.labels[LABEL_PORT] for t in watch.all_tasks()] == ["21999"]


def test_an_engine_down_at_start_is_listed_once_it_answers(
    engine: FakeEngine, watch: TaskWatch, woken: Woken
) -> None:
    engine.start(spec(DEV, 1))
    engine.reachable = False
    watch.start()
    with pytest.raises(ComponentError, match="unreachable"):
        watch.tasks(DEV)
    engine.reachable = True
    assert woken.wait(DEV)
    assert len(watch.tasks(DEV)) == 1


def tries_reach(engine: FakeEngine, tries: int, timeout: float = 10) -> bool:
    """Whether the watch has tried to follow the engine ``tries`` times (bounded wait)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if len(engine.calls_to("events")) >= tries:
            return True
        done.wait(0.01)
    return False


def test_the_pause_between_failed_tries_doubles_up_to_its_limit() -> None:
    pauses = [retry_pause(n, 1.0, 60.0) for n in range(1, 10)]
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert retry_pause(10_000, 1.0, 60.0) == 60.0


def test_an_engine_that_never_answers_is_warned_of_once_and_again_when_it_answers(
    engine: FakeEngine, woken: Woken, caplog: pytest.LogCaptureFixture
) -> None:
    engine.start(spec(DEV, 1))
    engine.reachable = False
    watch = TaskWatch(
        engine, PLATFORM, woken, retry=0.001, retry_limit=0.002, where="target eu's engine"
    )
    caplog.set_level(logging.DEBUG, logger="stackyard.deploy.taskwatch")
    watch.start()
    try:
        assert tries_reach(engine, 20)  # the watch retries every few ms
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warned == [
            "cannot list target eu's engine's tasks (the fake engine is unreachable "
            "(reachable=False)); trying again, less often while it lasts"
        ]
        engine.reachable = True
        assert woken.wait(DEV)
        assert len(watch.tasks(DEV)) == 1
    finally:
        watch.stop()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned[1:] == ["target eu's engine answers again; its tasks are listed"]


def test_an_engine_seen_answering_is_listed_at_once_not_after_the_pause(
    engine: FakeEngine, woken: Woken
) -> None:
    engine.start(spec(DEV, 1))
    engine.reachable = False
    watch = TaskWatch(engine, PLATFORM, woken, retry=3600, retry_limit=3600)
    watch.start()
    try:
        assert tries_reach(engine, 2)  # start's try, then the thread's first: then it pauses
        engine.reachable = True
        watch.retry_now()
        assert woken.wait(DEV)  # not an hour later
        assert len(watch.tasks(DEV)) == 1
    finally:
        watch.stop()


def test_node_use_counts_every_task_on_each_node_and_asks_again_when_its_own_change(
    woken: Woken,
) -> None:
    swarm = FakeSwarm()
    watch = TaskWatch(swarm, PLATFORM, woken, use_ttl=300)
    swarm.occupy("node-1", tasks=2, cpu=0.5)  # another platform's services
    swarm.start(replace(spec(DEV, 1, platform="other"), placement=Placement(node="node-2")))
    watch.resync()
    assert watch.node_use() == {
        "node-1": NodeUse(2, cpu=0.5),  # not Stackyard's: no owners
        "node-2": NodeUse(1, 0.5, SPEC_MEMORY, owners=(("other", DEV.stack, DEV.stage),)),
    }
    assert watch.node_use() == watch.node_use()
    assert len(swarm.calls_to("node_use")) == 1  # nothing of its own changed: not asked again
    ours = swarm.start(replace(spec(DEV, 2), placement=Placement(node="node-3")))
    watch.put(ours)  # what the executor says after a start
    owner = ((PLATFORM, DEV.stack, DEV.stage),)
    assert watch.node_use()["node-3"] == NodeUse(1, 0.5, SPEC_MEMORY, owners=owner)
    watch.drop(ours.id)
    swarm.remove(ours.id)
    assert "node-3" not in watch.node_use()
    assert len(swarm.calls_to("node_use")) == 3


def test_node_use_is_nothing_on_an_engine_without_nodes_and_unknown_while_it_is(
    engine: FakeEngine, watch: TaskWatch
) -> None:
    watch.resync()
    assert watch.node_use() == {}
    swarm = FakeSwarm()
    on_swarm = TaskWatch(swarm, PLATFORM, Woken())
    with pytest.raises(ComponentError, match="not been listed yet"):
        on_swarm.node_use()
