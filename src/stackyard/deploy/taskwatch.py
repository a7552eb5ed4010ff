"""The one observer of the engine's tasks, shared by every stage loop (list, then watch).

``TaskWatch`` lists the platform's tasks once, then follows the engine's event stream and
updates its cache of TaskInfo per stage, waking only the stage whose tasks changed. Each
event window ends with a full re-list (the safety net for a missed event). An engine
without events is listed every ``poll`` seconds instead. The stage loops read their tasks
here, so an idle stage costs the engine nothing; the executor tells the watch what it
just started or removed, so the next step sees it even before the engine's event comes.
On an engine with nodes it keeps the nodes too: a node event lists everything again, and
wakes the stages with tasks on a node that changed. What each node holds (``node_use``:
every task there, whoever started it, and their reservations) is asked of the engine
when placement needs it, at most once per ``use_ttl`` seconds unless one of the
platform's own tasks came, went or moved meanwhile (then at once).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from stackyard.deploy.keys import StageKey
from stackyard.engines.base import (
    LABEL_PLATFORM,
    Engine,
    NodeInfo,
    NodeUse,
    TaskEvent,
    TaskEventKind,
    TaskEvents,
    TaskInfo,
)
from stackyard.errors import ComponentError, NotFoundError, StackyardError

log = logging.getLogger(__name__)

NodeChange = Callable[[Mapping[str, NodeInfo], Mapping[str, NodeInfo], list[TaskInfo]], None]
_NEVER_STARTED = datetime.min.replace(tzinfo=UTC)


class TaskWatch:
    """A cache of the platform's tasks, kept current from the engine's events.

    ``on_change(key)`` is called (on the watch's thread, or the caller's) when a stage's
    tasks changed. ``resync`` and ``handle`` are the steps the thread takes; tests call
    them directly.
    """

    def __init__(
        self,
        engine: Engine,
        platform_id: str,
        on_change: Callable[[StageKey], None],
        *,
        resync: float = 30.0,
        poll: float = 1.0,
        retry: float = 1.0,
        on_nodes: NodeChange | None = None,
        name: str = "task-watch",
        where: str = "the engine",
        retry_limit: float = 5.0,
        use_ttl: float = 1.0,
    ) -> None:
        self.engine = engine
        self._name = name  # its thread's
        self._where = where  # how its log lines name the engine: "target eu's engine"
        self._retry_limit = retry_limit  # the longest pause between two failed tries
        self._warned: str | None = None  # the failure last logged as a warning
        self._retry_now = threading.Event()  # set: cut the pause before the next try short
        # Called (on the watch's thread) after a listing in which nodes changed: the nodes
        # before and after, by id, and every task then.
        self._on_nodes = on_nodes
        self.labels = {LABEL_PLATFORM: platform_id}
        self._on_change = on_change
        self._resync = resync
        self._poll = poll
        self._retry = retry
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskInfo] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._touched: dict[str, int] = {}  # task -> the change that last wrote it
        self._gone: set[str] = set()  # removed: a late report of them is ignored
        self._changes = itertools.count(1)
        self._problem: StackyardError | None = ComponentError(
            "the engine's tasks have not been listed yet",
            hint="wait a moment: the platform lists them at start",
        )
        # What each node holds, as last asked: valid while no own task changed since, and
        # for use_ttl seconds (monotonic).
        self._use_ttl = use_ttl
        self._use: tuple[int, float, dict[str, NodeUse]] | None = None  # generation, at, use
        self._use_generation = 0  # one more each time the platform's own tasks change
        self._use_lock = threading.Lock()  # one question to the engine at a time
        self._stopping = threading.Event()
        self._stream: TaskEvents | None = None
        self._thread: threading.Thread | None = None

    # -- what the stage loops read

    def tasks(self, key: StageKey) -> list[TaskInfo]:
        """The stage's tasks, oldest first; ComponentError while the engine's state is
        unknown (not listed yet, or the engine stopped answering)."""
        return [t for t in self.all_tasks() if StageKey.of(t.labels) == key]

    def all_tasks(self) -> list[TaskInfo]:
        with self._lock:
            if self._problem is not None:
                raise self._problem
            tasks = list(self._tasks.values())
        return sorted(tasks, key=lambda t: (t.started_at or _NEVER_STARTED, t.id))

    def problem(self) -> StackyardError | None:
        """Why the engine's tasks are unknown now (not listed yet, or it stopped
        answering); None while they are known."""
        with self._lock:
            return self._problem

    def has(self, task_id: str) -> bool:
        """Whether the task is one of this engine's, as last seen."""
        with self._lock:
            return task_id in self._tasks

    def nodes(self) -> list[NodeInfo] | None:
        """The engine's nodes as last listed; None for an engine without nodes."""
        if not self.engine.supports_nodes:
            return None
        with self._lock:
            if self._problem is not None:
                raise self._problem
            return list(self._nodes.values())

    def node_use(self) -> dict[str, NodeUse]:
        """Node id -> every task on it (of any platform, or none) and what they reserve,
        by the engine's own account; {} for an engine without nodes. Raises what the
        engine raises (the stage is then blind, as when the engine does not answer)."""
        if not self.engine.supports_nodes:
            return {}
        with self._use_lock:
            with self._lock:
                if self._problem is not None:
                    raise self._problem
                generation, seen = self._use_generation, self._use
            fresh = seen is not None and time.monotonic() - seen[1] < self._use_ttl
            if seen is not None and fresh and seen[0] == generation:
                return dict(seen[2])
            asked_at = time.monotonic()
            use = self.engine.node_use()
            with self._lock:
                self._use = (generation, asked_at, use)
            return dict(use)

    # -- what the executor says

    def put(self, task: TaskInfo, *, wake: bool = True) -> None:
        """The engine reported ``task`` (an event, or a start the executor just made)."""
        with self._lock:
            if task.id in self._gone:
                return
            before = self._tasks.get(task.id)
            self._tasks[task.id] = task
            self._touched[task.id] = next(self._changes)
            if before is None or (before.node, before.state) != (task.node, task.state):
                self._use_generation += 1
        if wake and before != task:
            self._wake(task)

    def drop(self, task_id: str, *, wake: bool = True) -> None:
        """The task is gone (removed by the executor, or a ``removed`` event)."""
        with self._lock:
            self._gone.add(task_id)
            before = self._tasks.pop(task_id, None)
            self._touched[task_id] = next(self._changes)
            self._use_generation += 1
        if wake and before is not None:
            self._wake(before)

    def refresh(self, task_id: str) -> None:
        """Ask the engine about one task now (after a stop, for instance)."""
        try:
            self.put(self.engine.inspect(task_id))
        except NotFoundError:
            self.drop(task_id)

    # -- the steps of the watch

    def resync(self) -> None:
        """List every task of the platform and make the cache say the same; a change made
        while the listing ran (an event, a start) is newer, and stays."""
        with self._lock:
            began = next(self._changes)
        try:
            nodes = {n.id: n for n in self.engine.nodes()} if self.engine.supports_nodes else {}
            listed = {t.id: t for t in self.engine.list(self.labels)}
        except StackyardError as exc:
            with self._lock:
                self._problem = exc
            raise
        changed: set[StageKey] = set()
        with self._lock:
            merged: dict[str, TaskInfo] = {}
            for task_id in listed.keys() | self._tasks.keys():
                newer = self._touched.get(task_id, 0) > began
                task = self._tasks.get(task_id) if newer else listed.get(task_id)
                if task is not None and task_id not in self._gone:
                    merged[task_id] = task
                before, after = self._tasks.get(task_id), merged.get(task_id)
                either = after or before
                key = StageKey.of(either.labels) if either is not None else None
                if before != after and key is not None:
                    changed.add(key)
            self._gone &= listed.keys()  # a listing that no longer shows them: truly gone
            self._touched = {i: n for i, n in self._touched.items() if n > began}
            self._tasks = merged
            self._problem = None
            self._use_generation += 1
            before_nodes, self._nodes = self._nodes, nodes
        moved = {
            i for i in nodes.keys() | before_nodes.keys() if nodes.get(i) != before_nodes.get(i)
        }
        if moved:
            # A node that changed (down, drained, relabelled) concerns the stages on it.
            changed |= {
                k for t in merged.values() if t.node in moved and (k := StageKey.of(t.labels))
            }
            if self._on_nodes is not None:
                self._on_nodes(before_nodes, nodes, list(merged.values()))
        for key in changed:
            self._on_change(key)

    def handle(self, event: TaskEvent) -> None:
        """One event: inspect the task (or forget it), and wake its stage if it changed."""
        if event.kind is TaskEventKind.NODE:
            self.resync()  # a node's change changes what its tasks report: list them all
        elif event.kind is TaskEventKind.REMOVED:
            self.drop(event.task_id)
        else:
            self.refresh(event.task_id)

    # -- the thread

    def start(self) -> None:
        """List the tasks now (so the stage loops adopt them at once), then follow the
        engine from a thread. An engine that does not answer yet is retried there."""
        stream: TaskEvents | None = None
        try:
            stream = self._open_synced()
        except StackyardError as exc:
            self._failed(exc)
        self._thread = threading.Thread(
            target=self._run, args=(stream,), name=self._name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._retry_now.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _open_synced(self) -> TaskEvents | None:
        """Open the event stream first, then list: nothing that happens between is missed.
        None for an engine without events (it is listed only)."""
        if not self.engine.supports_events:
            self.resync()
            return None
        stream = self.engine.events(self.labels, window=self._resync)
        with self._lock:
            self._stream = stream
        if self._stopping.is_set():
            stream.close()
        try:
            self.resync()
        except BaseException:
            stream.close()
            raise
        return stream

    def retry_now(self) -> None:
        """The engine was just seen answering (a deploy's check): if the watch is waiting
        to try again, it tries now rather than at the end of its pause."""
        self._retry_now.set()

    def _run(self, stream: TaskEvents | None) -> None:
        failures = 1 if self._warned is not None else 0  # start() already failed once
        synced = stream is not None or self._problem is None
        while not self._stopping.is_set():
            try:
                if not self.engine.supports_events:
                    if synced and self._stopping.wait(self._poll):
                        return
                    self.resync()
                    self._answered()
                else:
                    stream = stream or self._open_synced()
                    self._answered()
                    self._follow(stream)
                failures, synced = 0, True
            except StackyardError as exc:
                failures += 1
                self._failed(exc)
                self._retry_now.wait(retry_pause(failures, self._retry, self._retry_limit))
                self._retry_now.clear()
            finally:
                if stream is not None:
                    stream.close()
                stream = None

    def _failed(self, exc: StackyardError) -> None:
        """The engine's tasks are unknown: say so once per problem, not once per try."""
        with self._lock:
            self._problem = exc
        if exc.message != self._warned:
            self._warned = exc.message
            log.warning("cannot list %s's tasks (%s); trying again, less often while it lasts",
                        self._where, exc)  # fmt: skip
        else:
            log.debug("cannot list %s's tasks (%s), still", self._where, exc)

    def _answered(self) -> None:
        if self._warned is not None:
            self._warned = None
            log.warning("%s answers again; its tasks are listed", self._where)

    def _follow(self, stream: TaskEvents | None) -> None:
        for event in stream or ():
            if self._stopping.is_set():
                return
            self.handle(event)

    def _wake(self, task: TaskInfo) -> None:
        key = StageKey.of(task.labels)
        if key is not None:
            self._on_change(key)


def retry_pause(failures: int, first: float, limit: float) -> float:
    """The pause after the ``failures``-th failed try in a row: ``first``, doubling each
    time, at most ``limit``."""
    return min(first * float(2 ** min(failures - 1, 32)), limit)
