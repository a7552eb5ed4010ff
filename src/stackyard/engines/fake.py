"""``FakeEngine``: the Engine seam in memory, for unit tests of the deploy controller.

No threads, no sleeping: time is whatever ``clock`` says, and behaviour is scripted per image
digest with ``behave``. It refuses what docker refuses (tags, duplicate names, unknown ids).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from stackyard.engines.base import (
    LABEL_PORT,
    Engine,
    EngineError,
    Health,
    TaskInfo,
    TaskSpec,
    TaskState,
    split_digest_reference,
)
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


class FakeEngine(Engine):
    """In-memory tasks with deterministic ids; ``calls`` records every seam call."""

    name: ClassVar[str] = "fake"
    supports_bridge_network: ClassVar[bool] = True
    supports_image_healthcheck: ClassVar[bool] = True

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.calls: list[Call] = []
        self.reachable = True
        self._behaviours: dict[str, Behaviour] = {}
        self._tasks: dict[str, _Task] = {}
        self._started = 0
        self._starting = threading.Lock()

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
            raise EngineError(f"task {spec.name} failed to start: {behaviour.start_error}")
        self._started += 1
        task = _Task(
            id=f"fake-{self._started:04d}",
            spec=spec,
            behaviour=behaviour,
            started_at=self.clock(),
            lines=[line.format_map(_env(spec)) for line in behaviour.output],
        )
        self._tasks[task.id] = task
        return self._info(task)

    def list(self, labels: Mapping[str, str]) -> list[TaskInfo]:
        self.calls.append(("list", (dict(labels),)))
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
        self._tasks.pop(task_id, None)

    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        """The lines so far; ``follow`` cannot block without threads, so it ends here too."""
        self.calls.append(("logs", (task_id, tail, follow)))
        lines = list(self._task(task_id).lines)
        return iter(lines if tail is None else lines[-tail:] if tail else [])

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
        if now < task.started_at + timedelta(seconds=behaviour.health_after):
            task.health = Health.STARTING
        else:
            task.health = Health.HEALTHY if behaviour.healthy else Health.UNHEALTHY
            task.health_output = behaviour.health_output

    def _exit(self, task: _Task, exit_code: int, at: datetime) -> None:
        task.state, task.exit_code, task.finished_at = TaskState.EXITED, exit_code, at

    def _info(self, task: _Task) -> TaskInfo:
        self._advance(task)
        spec = task.spec
        return TaskInfo(
            id=task.id,
            name=spec.name,
            image=spec.image,
            labels={**spec.labels, LABEL_PORT: str(spec.port)},
            state=task.state,
            health=task.health,
            port=spec.port,
            exit_code=task.exit_code,
            started_at=task.started_at,
            finished_at=task.finished_at,
            health_output=task.health_output,
        )


def _env(spec: TaskSpec) -> dict[str, str]:
    host = "127.0.0.1" if spec.network_mode == "host" else "0.0.0.0"
    port = spec.port if spec.network_mode == "host" else spec.container_port
    return {**spec.env, "PORT": str(port), "HOST": host}
