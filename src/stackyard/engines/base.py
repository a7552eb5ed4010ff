"""The Engine seam: start, list, inspect, stop and remove tasks, read their logs, and
follow their events.

A task is one container of a stage, always started from ``repo@sha256:…``. The deploy
controller only talks to this class; ``docker`` (one host) and ``swarm`` (a cluster of
nodes) implement it, and ``FakeEngine`` and ``FakeSwarm`` (engines/fake.py) implement it in
memory for unit tests. An engine that places tasks on several machines also lists its
nodes (``supports_nodes``): where each one answers, and whether it takes new tasks.
"""

from __future__ import annotations

import builtins
import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Generic, Literal, TypeVar

from stackyard.errors import ComponentError, StackyardError, UsageError, require
from stackyard.registry_login import RegistryLogin

NetworkMode = Literal["host", "bridge"]

# Labels every Stackyard task carries, so the platform can find (and adopt) its own.
LABEL_PLATFORM = "dev.stackyard.platform"  # the data dir's id: two platforms never mix
LABEL_STACK = "dev.stackyard.stack"
LABEL_STAGE = "dev.stackyard.stage"
LABEL_RELEASE = "dev.stackyard.release"
LABEL_DEPLOYMENT = "dev.stackyard.deployment"
LABEL_PORT = "dev.stackyard.port"
# Seconds within which ``Engine.ping`` (and ``verify``) answer or raise: a deploy asks its
# engine first, and an address that drops packets or a peer that accepts and never answers
# must refuse it soon, not hold it for the client's long timeout (made for pulls).
PING_TIMEOUT = 10
# Seconds within which a listing answers or raises (``Engine.list``, ``nodes``,
# ``node_use``, and the swarm event stream's listing each poll): the task watch lists every
# second (swarm) or every window (docker), and an engine that starts hanging later must
# make that tick fail soon, naming the call, not hold the target's watch for the client's
# long timeout. Measured listings take 7-95 ms (p90 at 300 services, load up to 28: the
# swarm listing bench in docs/benchmarks.md); 10 s is 100 times that (docs/decisions.md).
LISTING_TIMEOUT = 10
# Seconds within which a change the engine makes in one request answers or raises: a
# container's create, start, file copy and remove, a swarm service's create, scale and
# remove, a secret's create. Each does some work (a start runs runc, a remove kills and
# unmounts), so more than a listing's 10 s; a target that accepts and never answers fails
# the stage's start or stop within it, naming the call, not the client's 60-120 s.
CHANGE_TIMEOUT = 30
# Seconds a pull may go without a word from the engine (no progress line) before it is
# given up: a big image legitimately takes minutes, so the silence is bounded, not the
# whole pull. 60 s, as Kubernetes' kubelet gives a pull without progress by default.
PULL_SILENCE = 60
# Labels on a cluster's nodes: the address its tasks answer on (set by the operator or the
# platform), and that the platform is moving the node's tasks away (``nodes drain``).
NODE_LABEL_ADDRESS = "dev.stackyard.address"
NODE_LABEL_DRAINING = "dev.stackyard.draining"


class TaskState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    # The engine moves it to another node (a swarm service an operator updated): it runs
    # nowhere until it runs there, at a new address. Not an end: the stage waits for it.
    MOVING = "moving"
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


class NodeState(StrEnum):
    READY = "ready"
    DOWN = "down"
    UNKNOWN = "unknown"
    DISCONNECTED = "disconnected"


class Availability(StrEnum):
    """Whether a node takes tasks: ``active``; ``pause`` (keeps its tasks, takes no new
    ones); ``drain`` (holds none)."""

    ACTIVE = "active"
    PAUSE = "pause"
    DRAIN = "drain"


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def address_problem(text: str) -> str:
    """Why ``text`` is not a node address (an IP address or a DNS name); "" when it is."""
    try:
        ipaddress.ip_address(text)
        return ""
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(text) and not text.replace(".", "").isdigit():
        return ""
    return f"'{text}' is not an IP address or a host name"


@dataclass(frozen=True)
class NodeInfo:
    """One machine of a cluster, as the engine reports it."""

    id: str
    name: str  # its host name (not unique: several nodes may share one)
    address: str  # where its tasks answer; "" when unknown
    address_from: str  # "label" (NODE_LABEL_ADDRESS), or "engine" (its own guess)
    role: str  # "manager" or "worker"
    state: NodeState
    availability: Availability
    labels: Mapping[str, str] = field(default_factory=dict)
    address_problem: str = ""  # the address label holds something that is not an address
    engine_labels: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, str] = field(default_factory=dict)  # "os", "arch"
    cpu: float = 0.0  # its cores, as the engine counts them; 0: unknown
    memory: int = 0  # its memory in bytes; 0: unknown

    @property
    def ready(self) -> bool:
        return self.state is NodeState.READY

    @property
    def takes_tasks(self) -> bool:
        """Ready, active, and not being drained by the platform: new tasks may go here."""
        return self.ready and self.availability is Availability.ACTIVE and not self.draining

    @property
    def draining(self) -> bool:
        """The platform is moving this node's tasks away (``stackyard nodes drain``)."""
        return NODE_LABEL_DRAINING in self.labels or self.availability is Availability.DRAIN


@dataclass(frozen=True)
class NodeUse:
    """What one node holds by the engine's own account: every task meant to run there (of
    this platform, another one, or no platform at all) and the cpu and memory they reserve;
    ``owners``: (platform, stack, stage) of each of those tasks that carries Stackyard's
    labels, so one listing says both what a node holds and whose (``stackyard nodes``)."""

    tasks: int = 0
    cpu: float = 0.0  # reserved cores
    memory: int = 0  # reserved bytes
    owners: tuple[tuple[str, str, str], ...] = ()

    def __add__(self, other: NodeUse) -> NodeUse:
        return NodeUse(
            self.tasks + other.tasks,
            self.cpu + other.cpu,
            self.memory + other.memory,
            self.owners + other.owners,
        )

    def own(self, platform: str) -> builtins.list[tuple[str, str]]:
        """(stack, stage) of each of the tasks there that are ``platform``'s."""
        return [(stack, stage) for p, stack, stage in self.owners if p == platform]


def owner_of(labels: Mapping[str, str]) -> tuple[tuple[str, str, str], ...]:
    """A task's (platform, stack, stage) from its labels, as ``NodeUse.owners`` holds it;
    () for a task that is not a Stackyard task."""
    platform = labels.get(LABEL_PLATFORM)
    if not platform:
        return ()
    return ((platform, labels.get(LABEL_STACK, ""), labels.get(LABEL_STAGE, "")),)


@dataclass(frozen=True)
class Placement:
    """Where a task may run, on an engine with nodes: pinned to ``node`` (an id) when the
    platform chose one, and only where every one of ``constraints`` holds (Swarm's syntax,
    e.g. ``node.labels.zone == a``). An engine without nodes ignores ``node``."""

    node: str | None = None
    constraints: tuple[str, ...] = ()


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
    pids_limit: int = 1024  # processes and threads at once
    read_only: bool = False  # a read-only root file system (/tmp and /run stay writable)
    stop_timeout: float = 10.0  # seconds between SIGTERM and SIGKILL
    files: Mapping[str, str] = field(default_factory=dict)  # path in container -> content
    login: RegistryLogin | None = None  # how the engine pulls ``image``
    placement: Placement = field(default_factory=Placement)


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
    node: str = ""  # the id of the node it runs on; "" on an engine without nodes

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


class EngineUnreachable(ComponentError):
    """The engine did not answer. Its message names the engine and ``endpoint``, where it
    was asked (``the Docker engine at tcp://… did not answer: …``): who reports it (``targets
    check``) need not name the engine again."""

    def __init__(
        self, message: str, *, endpoint: str, hint: str | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message, hint=hint, retryable=retryable)
        self.endpoint = endpoint


class EngineMisfit(UsageError):
    """The engine answers but cannot serve as configured (a swarm engine asked at a node that
    is no swarm manager). Its message names the engine and ``endpoint``, as
    EngineUnreachable's does."""

    def __init__(self, message: str, *, endpoint: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.endpoint = endpoint


class TaskEventKind(StrEnum):
    """What happened to a task; the watcher then inspects it (or drops it when REMOVED)."""

    CREATED = "created"
    STARTED = "started"
    EXITED = "exited"  # it died: crashed, stopped or killed
    HEALTH = "health"  # its image HEALTHCHECK status changed
    REMOVED = "removed"
    NODE = "node"  # a node changed (state, availability, labels, joined, left): task_id is its id


@dataclass(frozen=True)
class TaskEvent:
    """One event of one task (or, for NODE, of one node). ``labels`` include the task's
    labels (an engine may add other attributes), so a watcher knows the stage without
    asking the engine."""

    task_id: str
    kind: TaskEventKind
    labels: Mapping[str, str] = field(default_factory=dict)


T = TypeVar("T")


class Stream(Generic[T]):
    """What an engine holds open for a reader (task events, a followed log): iterate it on
    one thread; ``close`` from any thread ends the iteration, and lets go of the engine's
    connection (a follower that went away)."""

    def __init__(self, items: Iterator[T], close: Callable[[], None]) -> None:
        self._items = items
        self._close = close

    def __iter__(self) -> Iterator[T]:
        return self._items

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# Task events also end by themselves when their window is over.
TaskEvents = Stream[TaskEvent]
# A task's output lines, oldest first; followed, it ends when the task does (or at close).
TaskLog = Stream[str]


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
    supports_nodes: ClassVar[bool] = False  # nodes(), update_node(), Placement honoured
    # A real platform: its builds leave their images in this machine's Docker engine (the
    # one the builds' DockerBuilder reaches), and retention counts and prunes them there.
    # Without it (the fake engine of unit tests) retention leaves the machine's images alone.
    supports_local_images: ClassVar[bool] = False

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
    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> TaskLog:
        """The task's output lines (stdout and stderr), oldest first; ``follow`` goes on
        with new lines until the task ends or the log is closed."""

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

    def nodes(self) -> builtins.list[NodeInfo]:
        """The cluster's nodes. Only engines with ``supports_nodes``."""
        self._require_nodes("list the nodes of a cluster")
        raise NotImplementedError(f"{type(self).__name__} sets supports_nodes: implement nodes")

    def node_use(self) -> dict[str, NodeUse]:
        """Node id -> what the node holds: every task meant to run there, whoever started
        it, and what they reserve (placement counts them all). Only with ``supports_nodes``."""
        self._require_nodes("count what runs on each node of a cluster")
        raise NotImplementedError(f"{type(self).__name__} sets supports_nodes: implement it")

    def update_node(
        self,
        node_id: str,
        *,
        availability: Availability | None = None,
        labels: Mapping[str, str | None] | None = None,
    ) -> NodeInfo:
        """Change a node's availability and labels (a None value removes the label); return
        it as changed. NotFoundError for an unknown node. Only with ``supports_nodes``."""
        self._require_nodes("change a node")
        raise NotImplementedError(f"{type(self).__name__} sets supports_nodes: implement it")

    def _require_nodes(self, needed_for: str) -> None:
        require(
            self,
            "nodes",
            needed_for=needed_for,
            hint="run the platform on an engine with nodes (stackyard up --engine swarm)",
        )

    def ping(self) -> None:  # noqa: B027 - optional: adapters that can check cheaply do
        """Raise ComponentError when the engine does not answer within ``PING_TIMEOUT``
        seconds: its ping, and the first listing a task watch of it makes (each call
        within that bound; the error names the call that did not answer)."""

    def verify(self) -> None:  # noqa: B027 - optional
        """Raise UsageError when the engine answers but cannot serve as configured (a swarm
        engine on a node that is no manager); the platform calls it once at start."""

    def has_bridge_network(self) -> bool:
        """Whether this engine, as it runs now, can give tasks a bridge network (the
        ``auto`` network mode picks bridge then). Engines with ``supports_bridge_network``
        that know better (a daemon started with ``--bridge=none``) say so here."""
        return self.supports_bridge_network

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the engine client holds."""
