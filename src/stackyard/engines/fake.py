"""``FakeEngine``: the Engine seam in memory, for unit tests of the deploy controller;
``FakeSwarm``: the same with nodes, as the swarm engine has them.

No threads, no sleeping: time is whatever ``clock`` says, and behaviour is scripted per image
digest with ``behave``. It refuses what docker refuses (tags, duplicate names, unknown ids).
Its event streams get an event for every change it makes; a change that only the clock
makes (``crash_after``, ``health_after``) is noticed, and sent, when a call looks at the task.
"""

from __future__ import annotations

import builtins
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from stackyard.engines.base import (
    LABEL_PORT,
    NODE_LABEL_ADDRESS,
    Address,
    Availability,
    Engine,
    EngineError,
    Health,
    NodeInfo,
    NodeState,
    NodeUse,
    TaskEvent,
    TaskEventKind,
    TaskEvents,
    TaskInfo,
    TaskLog,
    TaskSpec,
    TaskState,
    owner_of,
    split_digest_reference,
)
from stackyard.engines.constraints import holds, parse_constraint
from stackyard.errors import ComponentError, NotFoundError

Clock = Callable[[], datetime]
Call = tuple[str, tuple[object, ...]]


@dataclass(frozen=True)
class Behaviour:
    """What a task started from one digest does.

    ``healthy``: None = the image has no HEALTHCHECK; True/False = it turns HEALTHY or
    UNHEALTHY ``health_after`` seconds after start (STARTING until then).
    ``crash_after``: the process exits on its own with ``exit_code`` that many seconds after
    start (0 = at once). ``output`` lines are formatted with the task's env (``{PORT}``).
    ``start_error``: start() raises EngineError with this text (like a refused create).
    ``missing``: the digest is not in the registry, so the pull fails.
    """

    healthy: bool | None = None
    health_after: float = 0.0
    health_output: str = ""
    crash_after: float | None = None
    exit_code: int = 1
    stop_exit_code: int = 143  # 128 + SIGTERM, what busybox httpd under --init exits with
    output: Sequence[str] = ()
    start_error: str | None = None
    missing: bool = False


@dataclass
class _Task:
    id: str
    spec: TaskSpec
    behaviour: Behaviour
    started_at: datetime
    state: TaskState = TaskState.RUNNING
    health: Health = Health.NONE
    health_output: str = ""
    health_scripted: bool = False  # set_health() overrides the behaviour from then on
    exit_code: int | None = None
    finished_at: datetime | None = None
    lines: list[str] = field(default_factory=list)
    error: str = ""
    node: str = ""  # FakeSwarm: the node it runs on

    @property
    def labels(self) -> dict[str, str]:
        return {**self.spec.labels, LABEL_PORT: str(self.spec.port)}


@dataclass
class _Subscription:
    labels: dict[str, str]
    events: queue.SimpleQueue[TaskEvent | None] = field(default_factory=queue.SimpleQueue)


class FakeEngine(Engine):
    """In-memory tasks with deterministic ids; ``calls`` records every seam call."""

    name: ClassVar[str] = "fake"
    supports_bridge_network: ClassVar[bool] = True
    supports_image_healthcheck: ClassVar[bool] = True
    supports_events: ClassVar[bool] = True

    def __init__(self, clock: Clock | None = None, *, bridge_network: bool = False) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.calls: list[Call] = []
        self.reachable = True  # False: ping, list and events raise ComponentError
        self.bridge_network = bridge_network  # what has_bridge_network answers
        self._behaviours: dict[str, Behaviour] = {}
        self._tasks: dict[str, _Task] = {}
        self._started = 0
        self._starting = threading.Lock()
        self._subscriptions: list[_Subscription] = []
        self._subscribing = threading.Lock()

    # -- scripting (tests only) ---------------------------------------------------------------

    def behave(self, digest: str, **fields: Any) -> Behaviour:
        """Script what tasks from ``digest`` (``sha256:…``) do; ``fields`` are ``Behaviour``'s."""
        scripted = Behaviour(**fields)
        self._behaviours[digest] = scripted
        return scripted

    def kill(self, task_id: str, exit_code: int = 137) -> None:
        """The task's process dies now (a crash, or the OOM killer with 137)."""
        self._exit(self._task(task_id), exit_code, self.clock())

    def set_health(self, task_id: str, health: Health, output: str = "") -> None:
        task = self._task(task_id)
        task.health, task.health_output, task.health_scripted = health, output, True
        self._emit(task, TaskEventKind.HEALTH)

    def emit(self, task_id: str, *lines: str) -> None:
        """The task prints ``lines``."""
        self._task(task_id).lines.extend(lines)

    @property
    def task_ids(self) -> list[str]:
        """Every task that exists (not removed), in start order."""
        return list(self._tasks)

    def calls_to(self, method: str) -> list[tuple[object, ...]]:
        return [args for name, args in self.calls if name == method]

    # -- the seam -----------------------------------------------------------------------------

    def has_bridge_network(self) -> bool:
        if not self.reachable:
            raise ComponentError("the fake engine is unreachable (reachable=False)")
        return self.bridge_network

    def ping(self) -> None:
        self.calls.append(("ping", ()))
        if not self.reachable:
            raise ComponentError("the fake engine is unreachable (reachable=False)")

    def start(self, spec: TaskSpec) -> TaskInfo:
        with self._starting:  # the controller starts several tasks at once, as on Docker
            return self._start(spec)

    def _start(self, spec: TaskSpec) -> TaskInfo:
        self.calls.append(("start", (spec,)))
        _, digest = split_digest_reference(spec.image)
        behaviour = self._behaviours.get(digest, Behaviour())
        if behaviour.missing:
            raise EngineError(
                f"image {spec.image} for task {spec.name} is missing from the registry",
                hint="the release's image was deleted from the registry? rebuild or roll back",
            )
        if any(task.spec.name == spec.name for task in self._tasks.values()):
            raise EngineError(
                f"cannot create task {spec.name} from {spec.image}: "
                f'the container name "/{spec.name}" is already in use'
            )
        if behaviour.start_error is not None:
            raise EngineError(f"cannot start task {spec.name}: {behaviour.start_error}")
        self._started += 1
        task = _Task(
            id=f"fake-{self._started:04d}",
            spec=spec,
            behaviour=behaviour,
            started_at=self.clock(),
            lines=[line.format_map(_env(spec)) for line in behaviour.output],
            health=Health.NONE if behaviour.healthy is None else Health.STARTING,
        )
        self._tasks[task.id] = task
        self._emit(task, TaskEventKind.CREATED)
        self._emit(task, TaskEventKind.STARTED)
        return self._info(task)

    def list(self, labels: Mapping[str, str]) -> list[TaskInfo]:
        self.calls.append(("list", (dict(labels),)))
        if not self.reachable:
            raise ComponentError("the fake engine is unreachable (reachable=False)")
        found = []
        for task in self._tasks.values():
            info = self._info(task)
            if all(info.labels.get(key) == value for key, value in labels.items()):
                found.append(info)
        return found

    def inspect(self, task_id: str) -> TaskInfo:
        self.calls.append(("inspect", (task_id,)))
        return self._info(self._task(task_id))

    def stop(self, task_id: str, timeout: float) -> None:
        self.calls.append(("stop", (task_id, timeout)))
        task = self._tasks.get(task_id)
        if task is None:
            return
        self._advance(task)
        if task.state is not TaskState.EXITED:
            self._exit(task, task.behaviour.stop_exit_code, self.clock())

    def remove(self, task_id: str) -> None:
        self.calls.append(("remove", (task_id,)))
        task = self._tasks.pop(task_id, None)
        if task is not None:
            self._emit(task, TaskEventKind.REMOVED)

    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> TaskLog:
        """The lines so far; ``follow`` cannot block without threads, so it ends here too."""
        self.calls.append(("logs", (task_id, tail, follow)))
        lines = list(self._task(task_id).lines)
        shown = lines if tail is None else lines[-tail:] if tail else []
        return TaskLog(iter(shown), lambda: None)  # nothing held open

    def events(self, labels: Mapping[str, str], *, window: float) -> TaskEvents:
        """Events from now on, for ``window`` seconds of real time (or until closed)."""
        self.calls.append(("events", (dict(labels), window)))
        if not self.reachable:
            raise ComponentError("the fake engine is unreachable (reachable=False)")
        subscription = _Subscription(dict(labels))
        with self._subscribing:
            self._subscriptions.append(subscription)
        deadline = time.monotonic() + window

        def stream() -> Iterator[TaskEvent]:
            try:
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        event = subscription.events.get(timeout=left)
                    except queue.Empty:
                        return
                    if event is None:
                        return
                    yield event
            finally:
                self._unsubscribe(subscription)

        def close() -> None:
            subscription.events.put(None)
            self._unsubscribe(subscription)

        return TaskEvents(stream(), close)

    def _unsubscribe(self, subscription: _Subscription) -> None:
        with self._subscribing:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def _emit(self, task: _Task, kind: TaskEventKind) -> None:
        labels = task.labels
        with self._subscribing:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            if all(labels.get(key) == value for key, value in subscription.labels.items()):
                subscription.events.put(TaskEvent(task.id, kind, labels))

    # -- time passes only when a test looks -------------------------------------------------

    def _task(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"task {task_id} does not exist (any more)")
        return task

    def _advance(self, task: _Task) -> None:
        if task.state is TaskState.EXITED:
            return
        now = self.clock()
        behaviour = task.behaviour
        if behaviour.crash_after is not None:
            crash_at = task.started_at + timedelta(seconds=behaviour.crash_after)
            if now >= crash_at:
                self._exit(task, behaviour.exit_code, crash_at)
                return
        if behaviour.healthy is None or task.health_scripted:
            return
        before = task.health
        if now < task.started_at + timedelta(seconds=behaviour.health_after):
            task.health = Health.STARTING
        else:
            task.health = Health.HEALTHY if behaviour.healthy else Health.UNHEALTHY
            task.health_output = behaviour.health_output
        if task.health is not before:
            self._emit(task, TaskEventKind.HEALTH)

    def _exit(self, task: _Task, exit_code: int, at: datetime) -> None:
        task.state, task.exit_code, task.finished_at = TaskState.EXITED, exit_code, at
        self._emit(task, TaskEventKind.EXITED)

    def _info(self, task: _Task) -> TaskInfo:
        self._advance(task)
        spec = task.spec
        return TaskInfo(
            id=task.id,
            name=spec.name,
            image=spec.image,
            labels=task.labels,
            state=task.state,
            health=task.health,
            port=spec.port,
            exit_code=task.exit_code,
            started_at=task.started_at,
            finished_at=task.finished_at,
            health_output=task.health_output,
            error=task.error,
            address=Address(self._host(task), spec.port),
            node=task.node,
        )

    def _host(self, task: _Task) -> str:
        return "127.0.0.1"


def _env(spec: TaskSpec) -> dict[str, str]:
    host = "127.0.0.1" if spec.network_mode == "host" else "0.0.0.0"
    port = spec.port if spec.network_mode == "host" else spec.container_port
    return {**spec.env, "PORT": str(port), "HOST": host}


class FakeSwarm(FakeEngine):
    """FakeEngine with nodes (``node-1`` at 127.0.0.2, ``node-2`` at 127.0.0.3, ...).

    A task runs on the node its placement names (EngineError for an unknown one), or on
    the ready, active node with the fewest tasks; it answers at that node's address. A
    task whose node's constraints do not hold is EXITED at once with Swarm's "no suitable
    node" error. ``node_down`` loses a node's tasks, ``move`` puts a task on another node
    (a new address), ``add_node`` joins one; each sends a NODE (or task) event. Each node
    has 2 cores and 4 GiB; ``occupy`` puts tasks no platform of the fake started on a node
    (another platform's, anyone's): ``node_use`` counts them with the fake's own tasks.
    """

    name: ClassVar[str] = "fake-swarm"
    supports_bridge_network: ClassVar[bool] = False
    supports_nodes: ClassVar[bool] = True

    def __init__(self, clock: Clock | None = None, *, nodes: int = 3) -> None:
        super().__init__(clock)
        self._nodes: dict[str, NodeInfo] = {}
        self._foreign: dict[str, NodeUse] = {}  # node id -> what occupy() put there
        for number in range(1, nodes + 1):
            self.add_node(f"node-{number}", f"127.0.0.{number + 1}")

    # -- scripting (tests only)

    def add_node(
        self,
        node_id: str,
        address: str,
        *,
        labels: Mapping[str, str] | None = None,
        role: str = "worker",
    ) -> NodeInfo:
        node = NodeInfo(
            id=node_id,
            name=node_id,
            address=address,
            address_from="label",
            role=role,
            state=NodeState.READY,
            availability=Availability.ACTIVE,
            labels={NODE_LABEL_ADDRESS: address, **(labels or {})},
            platform={"os": "linux", "arch": "x86_64"},
            cpu=2.0,
            memory=4 * 1024**3,
        )
        self._nodes[node_id] = node
        self._emit_node(node_id)
        return node

    def node_down(self, node_id: str) -> None:
        """The node is gone: the engine says so, and its running tasks are lost."""
        node = self._node(node_id)
        self._nodes[node_id] = replace(node, state=NodeState.DOWN)
        for task in list(self._tasks.values()):
            if task.node == node_id and task.state is not TaskState.EXITED:
                task.error = f"lost: node {node_id} ({node.address}) is down"
                task.state, task.finished_at = TaskState.EXITED, self.clock()
                self._emit(task, TaskEventKind.EXITED)
        self._emit_node(node_id)

    def move(self, task_id: str, node_id: str) -> None:
        """The task now runs on another node (Swarm rescheduled it): a new address."""
        task = self._task(task_id)
        task.node = self._node(node_id).id
        self._emit(task, TaskEventKind.STARTED)

    def occupy(self, node_id: str, *, tasks: int = 1, cpu: float = 0.0, memory: int = 0) -> None:
        """Tasks that are not the fake's run on the node too (another platform's service
        on the same swarm), reserving ``cpu`` and ``memory`` in all."""
        before = self._foreign.get(self._node(node_id).id, NodeUse())
        self._foreign[node_id] = before + NodeUse(tasks, cpu, memory)

    def tasks_on(self, node_id: str) -> list[str]:
        return [t.id for t in self._tasks.values() if t.node == node_id]

    # -- the seam

    def nodes(self) -> builtins.list[NodeInfo]:
        self.calls.append(("nodes", ()))
        if not self.reachable:
            raise ComponentError("the fake engine is unreachable (reachable=False)")
        return list(self._nodes.values())

    def node_use(self) -> dict[str, NodeUse]:
        self.calls.append(("node_use", ()))
        if not self.reachable:
            raise ComponentError("the fake engine is unreachable (reachable=False)")
        use = dict(self._foreign)
        for task in self._tasks.values():
            if task.node and task.state is not TaskState.EXITED:
                mine = NodeUse(1, task.spec.cpu, task.spec.memory, owner_of(task.spec.labels))
                use[task.node] = use.get(task.node, NodeUse()) + mine
        return use

    def update_node(
        self,
        node_id: str,
        *,
        availability: Availability | None = None,
        labels: Mapping[str, str | None] | None = None,
    ) -> NodeInfo:
        self.calls.append(("update_node", (node_id, availability, dict(labels or {}))))
        node = self._node(node_id)
        merged = dict(node.labels)
        for key, value in (labels or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        address = merged.get(NODE_LABEL_ADDRESS, node.address)
        node = replace(
            node, availability=availability or node.availability, labels=merged, address=address
        )
        self._nodes[node_id] = node
        self._emit_node(node_id)
        return node

    def _start(self, spec: TaskSpec) -> TaskInfo:
        node_id = spec.placement.node or self._least_busy()
        node = self._node(node_id) if node_id in self._nodes else None
        if node is None:
            self.calls.append(("start", (spec,)))
            raise EngineError(f"task {spec.name}: node {node_id} is not in the swarm (any more)")
        info = super()._start(spec)
        task = self._tasks[info.id]
        task.node = node.id
        broken = [c for c in spec.placement.constraints if not holds(parse_constraint(c), node)]
        if broken:
            task.error = (
                "Swarm cannot place it: no suitable node (scheduling constraints not "
                f"satisfied on {len(self._nodes)} nodes) (constraints: {', '.join(broken)})"
            )
            task.state, task.finished_at = TaskState.EXITED, self.clock()
            self._emit(task, TaskEventKind.EXITED)
        return self._info(task)

    def _least_busy(self) -> str:
        ready = [n.id for n in self._nodes.values() if n.takes_tasks]
        if not ready:
            return ""
        foreign = self._foreign
        return min(
            ready, key=lambda n: (len(self.tasks_on(n)) + foreign.get(n, NodeUse()).tasks, n)
        )

    def _node(self, node_id: str) -> NodeInfo:
        node = self._nodes.get(node_id)
        if node is None:
            raise NotFoundError(f"node {node_id} does not exist")
        return node

    def _host(self, task: _Task) -> str:
        node = self._nodes.get(task.node)
        return node.address if node is not None else "127.0.0.1"

    def _emit_node(self, node_id: str) -> None:
        with self._subscribing:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.events.put(TaskEvent(node_id, TaskEventKind.NODE, {}))
