"""The engines of the targets in use, each followed by its own task watch (issue 13).

A stage runs on its release's target (``stage.target``; ``local`` when absent). The
platform's own engine is target ``local`` and is here from the start. Another target's
engine is made by its plugin (the target's engine kind and endpoint, ``EngineFactory``)
the first time a stage on it is observed, then kept, with a TaskWatch following it from
its own thread: one engine instance and one watch per target in use. A task is stopped,
removed and read on the engine whose watch lists it.

A target whose engine does not answer concerns only the stages on it: its watch keeps
the problem, and ``answering`` raises it, naming the target and how to check it, for the
stage observing; the other watches go on. The stage's own loop then fails its deployment
within its error budget, as for the platform's own engine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from stackyard.deploy.keys import StageKey
from stackyard.deploy.taskwatch import TaskWatch
from stackyard.engines.base import Engine, TaskInfo
from stackyard.errors import ComponentError, NotFoundError, StackyardError

log = logging.getLogger(__name__)

LOCAL = "local"  # the built-in target: the platform's own engine
EngineFactory = Callable[[str], Engine]
"""target name -> a new Engine for it (its plugin, at its endpoint); NotFoundError when the
platform has no such target."""
WatchFactory = Callable[[str, Engine], TaskWatch]
_NEVER_STARTED = datetime.min.replace(tzinfo=UTC)


def only_local_engine(name: str) -> Engine:
    """The engines of a platform that knows only ``local`` (tests, and the default)."""
    raise NotFoundError(f"no target named '{name}' (targets: {LOCAL})")


class TargetEngines:
    """target name -> its engine and task watch; ``local`` always, others once used."""

    def __init__(self, local: Engine, make: EngineFactory, watch: WatchFactory) -> None:
        self.local = local
        self._make = make
        self._new_watch = watch
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._engines: dict[str, Engine] = {LOCAL: local}
        self._watches: dict[str, TaskWatch] = {LOCAL: watch(LOCAL, local)}
        self._started = False
        self._stopped = False

    @property
    def local_watch(self) -> TaskWatch:
        return self._watches[LOCAL]

    # -- lifecycle

    def start(self) -> None:
        """Follow every engine made so far (``local``); the next ones at once when made."""
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
            watches = list(self._watches.values())
        for watch in watches:
            watch.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            made = [(t, self._engines[t], self._watches[t]) for t in self._watches]
        for target, engine, watch in made:
            watch.stop()
            if target != LOCAL:  # the platform closes its own engine
                engine.close()

    # -- the targets' engines

    def follow(self, target: str) -> TaskWatch:
        """The target's task watch, its engine made (and followed) on first use. Raises
        naming the target when its engine cannot be made (e.g. the target was removed)."""
        watch = self._watches.get(target)
        if watch is not None:
            return watch
        with self._lock:
            building = self._building.setdefault(target, threading.Lock())
        with building:  # one maker per target; other targets are not held up
            watch = self._watches.get(target)
            if watch is not None:
                return watch
            try:
                engine = self._make(target)
            except StackyardError as exc:
                raise on_target(target, exc) from exc
            watch = self._new_watch(target, engine)
            with self._lock:
                self._engines[target] = engine
                self._watches[target] = watch
                start = self._started and not self._stopped
            if start:
                log.info("target %s: following its engine", target)
                watch.start()  # lists its tasks now; an engine that does not answer is retried
            else:  # not followed (yet): listed once, now, as a start would
                try:
                    watch.resync()
                except StackyardError as exc:
                    log.warning("target %s: cannot list its engine's tasks: %s", target, exc)
            return watch

    def engine(self, target: str) -> Engine:
        self.follow(target)
        return self._engines[target]

    def ping(self, target: str) -> None:
        """Raise, naming the target and what to do, unless its engine answers now (within
        the engine's ping timeout); when it does, a watch waiting to list it again does so
        at once (a deploy on a target that came back does not wait for the watch's next
        try). The engine is asked before it is followed: a watch starts by listing it with
        the client's long timeout, which an engine that never answers would hold."""
        try:
            with self.reach(target) as engine:
                engine.ping()
            watch = self.follow(target)
        except StackyardError as exc:
            raise on_target(target, exc) from exc
        if watch.problem() is not None:
            watch.retry_now()

    def answering(self, target: str) -> TaskWatch:
        """The target's watch, once it knows the engine's tasks; else its problem, raised
        naming the target and what to do."""
        watch = self.follow(target)
        problem = watch.problem()
        if problem is not None:
            raise on_target(target, problem)
        return watch

    @contextmanager
    def reach(self, target: str) -> Iterator[Engine]:
        """The target's engine for one errand: the one in use, else one made for it and
        closed after (a target no stage runs on is not followed for this)."""
        with self._lock:
            engine = self._engines.get(target)
        if engine is not None:
            yield engine
            return
        try:
            engine = self._make(target)
        except StackyardError as exc:
            raise on_target(target, exc) from exc
        try:
            yield engine
        finally:
            engine.close()

    def watches(self) -> list[TaskWatch]:
        """The task watch of every target whose engine is in use, ``local`` first."""
        with self._lock:
            return list(self._watches.values())

    def followed(self) -> list[tuple[str, Engine]]:
        """Every target whose engine is in use, ``local`` first."""
        with self._lock:
            return list(self._engines.items())

    # -- a task, on the engine it lives on

    def target_of(self, task_id: str) -> str:
        """The target whose watch lists the task (``local`` when none does)."""
        with self._lock:
            watches = list(self._watches.items())
        for target, watch in watches:
            if watch.has(task_id):
                return target
        return LOCAL

    def engine_of(self, task_id: str) -> Engine:
        return self._engines[self.target_of(task_id)]

    def watch_of(self, task_id: str) -> TaskWatch:
        return self._watches[self.target_of(task_id)]

    def stage_tasks(self, key: StageKey) -> list[TaskInfo]:
        """The stage's tasks on every engine that answers, oldest first (a stage that moved
        to another target has its old tasks on the old one until they are stopped). An
        engine whose tasks are unknown adds none: ``answering`` says so for the stage's
        own target."""
        with self._lock:
            watches = list(self._watches.values())
        if len(watches) == 1:
            try:
                return watches[0].tasks(key)
            except StackyardError:
                return []
        found: dict[str, TaskInfo] = {}
        for watch in watches:
            try:
                tasks = watch.tasks(key)
            except StackyardError:
                continue
            for task in tasks:  # two targets may name one engine: a task counts once
                found.setdefault(task.id, task)
        return sorted(found.values(), key=lambda t: (t.started_at or _NEVER_STARTED, t.id))

    def other_tasks(self) -> list[TaskInfo]:
        """The platform's tasks on every other target's engine that answers (each once)."""
        with self._lock:
            others = [w for t, w in self._watches.items() if t != LOCAL]
        found: dict[str, TaskInfo] = {}
        for watch in others:
            if watch.problem() is None:
                for task in watch.all_tasks():  # two targets may name one engine
                    found.setdefault(task.id, task)
        return list(found.values())

    def all_tasks(self) -> list[TaskInfo]:
        """Every task of the platform: the platform's own engine's (raising when they are
        unknown, as before), and those of every other engine that answers."""
        found = {task.id: task for task in self.local_watch.all_tasks()}
        for task in self.other_tasks():
            found.setdefault(task.id, task)
        return list(found.values())


def on_target(target: str, exc: StackyardError) -> StackyardError:
    """``exc`` as the stages on ``target`` see it: which target, and how to check it (the
    platform's own engine's errors, and a target that does not exist, say so already)."""
    if target == LOCAL or isinstance(exc, NotFoundError):
        return exc
    return ComponentError(
        f"target {target}: {exc.message}",
        hint=f"check it: stackyard targets check {target}",
        retryable=exc.retryable,
    )
