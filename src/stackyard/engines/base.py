"""The Engine seam: start, list, inspect, stop and remove tasks, read their logs, and
follow their events.

A task is one container of a stage, always started from ``repo@sha256:…``. The deploy
controller only talks to this class; ``docker`` (one host) and later ``swarm`` implement it,
and ``FakeEngine`` (engines/fake.py) implements it in memory for unit tests.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from stackyard.errors import StackyardError, require
from stackyard.registry_login import RegistryLogin

NetworkMode = Literal["host", "bridge"]

# Labels every Stackyard task carries, so the platform can find (and adopt) its own.
LABEL_PLATFORM = "dev.stackyard.platform"  # the data dir's id: two platforms never mix
LABEL_STACK = "dev.stackyard.stack"
LABEL_STAGE = "dev.stackyard.stage"
LABEL_RELEASE = "dev.stackyard.release"
LABEL_DEPLOYMENT = "dev.stackyard.deployment"
LABEL_PORT = "dev.stackyard.port"


class TaskState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"  # stopped or crashed; see exit_code


class Health(StrEnum):
    NONE = "none"  # the image has no HEALTHCHECK
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class Address:
    """Where a task answers: the one address that health probes, router upstreams and
    ``check`` use. The docker engine reports 127.0.0.1 (its tasks bind loopback); an engine
    that places tasks on other machines reports that machine's address."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to start one task. ``image`` must be ``repo@sha256:…``."""

    name: str
    image: str
    port: int
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    network_mode: NetworkMode = "host"
    container_port: int = 8080  # bridge mode: the app's port inside, published on ``port``
    cpu: float = 0.5  # cores
    memory: int = 256 * 1024 * 1024  # bytes
    stop_timeout: float = 10.0  # seconds between SIGTERM and SIGKILL
    files: Mapping[str, str] = field(default_factory=dict)  # path in container -> content
    login: RegistryLogin | None = None  # how the engine pulls ``image``


@dataclass(frozen=True)
class TaskInfo:
    """What the engine reports about one task."""

    id: str
    name: str
    image: str  # the reference it was started from: repo@sha256:…
    labels: Mapping[str, str]
    state: TaskState
    health: Health
    port: int | None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    health_output: str = ""  # the last HEALTHCHECK output, when there is one
    error: str = ""  # the engine's own error for a task that failed to start
    address: Address | None = None  # where it answers; None for a task without a port

    @property
    def digest(self) -> str:
        """The image digest the task runs (``sha256:…``), or "" if it has none."""
        _, _, digest = self.image.partition("@")
        return digest

    @property
    def running(self) -> bool:
        return self.state is TaskState.RUNNING


class EngineError(StackyardError):
    """The engine refused an operation on a task (bad image, port taken, ...)."""


class TaskEventKind(StrEnum):
    """What happened to a task; the watcher then inspects it (or drops it when REMOVED)."""

    CREATED = "created"
    STARTED = "started"
    EXITED = "exited"  # it died: crashed, stopped or killed
    HEALTH = "health"  # its image HEALTHCHECK status changed
    REMOVED = "removed"


@dataclass(frozen=True)
class TaskEvent:
    """One event of one task. ``labels`` include the task's labels (an engine may add other
    attributes), so a watcher knows the stage without asking the engine."""

    task_id: str
    kind: TaskEventKind
    labels: Mapping[str, str] = field(default_factory=dict)


class TaskEvents:
    """A stream of task events: iterate it on one thread; ``close`` from any thread ends the
    iteration. It also ends by itself when its window is over."""

    def __init__(self, events: Iterator[TaskEvent], close: Callable[[], None]) -> None:
        self._events = events
        self._close = close

    def __iter__(self) -> Iterator[TaskEvent]:
        return self._events

    def close(self) -> None:
        self._close()

    def __enter__(self) -> TaskEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_DIGEST_REFERENCE = re.compile(r"(?P<repository>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})")


def split_digest_reference(image: str) -> tuple[str, str]:
    """``repo@sha256:…`` -> (repo, digest); EngineError for a tag or anything else.

    Every engine calls this first: tasks are pinned to a digest, never a mutable tag.
    """
    match = _DIGEST_REFERENCE.fullmatch(image)
    if match is None:
        raise EngineError(
            f"cannot start a task from '{image}': tasks start from a digest, never a tag",
            hint="pass the release's image as repo@sha256:<64 hex digits>",
        )
    return match["repository"], match["digest"]


class Engine(ABC):
    """One place to run tasks. Implementations register under ``stackyard.engines``."""

    name: ClassVar[str]
    supports_bridge_network: ClassVar[bool] = False
    supports_image_healthcheck: ClassVar[bool] = False
    supports_events: ClassVar[bool] = False  # events(); without it, callers list periodically

    @abstractmethod
    def start(self, spec: TaskSpec) -> TaskInfo:
        """Pull the image if needed, create and start the task; return it as started."""

    @abstractmethod
    def list(self, labels: Mapping[str, str]) -> list[TaskInfo]:
        """Every task (running or not) whose labels include all of ``labels``."""

    @abstractmethod
    def inspect(self, task_id: str) -> TaskInfo:
        """One task; NotFoundError when it does not exist (any more)."""

    @abstractmethod
    def stop(self, task_id: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; a stopped task is fine."""

    @abstractmethod
    def remove(self, task_id: str) -> None:
        """Remove a stopped task; a task that is already gone is fine."""

    @abstractmethod
    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        """The task's output lines (stdout and stderr), oldest first."""

    def events(self, labels: Mapping[str, str], *, window: float) -> TaskEvents:
        """Events of every task whose labels include all of ``labels``, from the moment this
        returns, for about ``window`` seconds (then the iteration ends; list again, and open
        the next window). A failure to open the stream raises ComponentError.

        Only engines with ``supports_events``; the others raise UnsupportedError.
        """
        require(
            self,
            "events",
            needed_for="stream task events",
            hint="read Engine.supports_events first, and list the tasks periodically instead",
        )
        raise NotImplementedError(f"{type(self).__name__} sets supports_events: implement events")

    def ping(self) -> None:  # noqa: B027 - optional: adapters that can check cheaply do
        """Raise ComponentError when the engine does not answer."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the engine client holds."""
