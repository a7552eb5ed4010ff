"""The ``swarm`` engine: each task is one Swarm service with one replica (the SDK lives here).

Swarm places and runs the tasks; Stackyard rolls them out (its own health gate, routes,
drain, circuit breaker and rollback), so no service ever gets an ``update_config`` and
Swarm never restarts a task (restart condition ``none``: the platform replaces a failed
task itself, and counts it). The deploy executor calls it through the Engine seam and
passes a ``Placement``: the node the platform chose, and the stage's constraints.

What Swarm's manager API reports is translated here: a service is a task; its one Swarm
task says the state, the node and the exit code; the node's address label (or, as a
fall-back, the address Swarm saw) plus the task's port is where it answers. Every
``docker.errors`` exception is translated at this boundary, as in engines/docker.py.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import docker
import docker.auth
import docker.errors

from stackyard.engines.base import (
    CHANGE_TIMEOUT,
    LABEL_PLATFORM,
    LABEL_PORT,
    LISTING_TIMEOUT,
    NODE_LABEL_ADDRESS,
    PING_TIMEOUT,
    Address,
    Availability,
    EngineError,
    EngineMisfit,
    EngineUnreachable,
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
    address_problem,
    owner_of,
    split_digest_reference,
)
from stackyard.engines.dockerapi import (
    CALL_ERRORS,
    DockerApiEngine,
    engine_url,
    raise_for_status,
    unreachable_reason,
)
from stackyard.errors import NotFoundError, StackyardError

log = logging.getLogger(__name__)

LABEL_TASK = "dev.stackyard.task"  # on a task's secrets: the service they belong to
NANO = 1_000_000_000
_RUNNING = "running"
# Swarm task states before "running" (the task is on its way), and after it (it ended).
_ON_ITS_WAY = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"}
_ON_ITS_WAY |= {"starting"}
_ENDED = {"complete", "shutdown", "failed", "rejected", "orphaned", "remove"}
# The desired state Swarm gives the tasks of a service scaled to 0; its reaper deletes them
# once they end.
_REAPED = "remove"
_PINNED = re.compile(r"node\.id\s*==\s*(\S+)")
# Swarm's pending reason when the nodes a task may use lack the cpu or memory it reserves.
# Often transient: the tasks a rolling deployment just stopped there still hold theirs for
# a moment after removal. A start waits a while (placement_wait) for room before it fails.
_NO_ROOM = "insufficient resources"
_NOT_A_MANAGER = "not a swarm manager"
_SWARM_HINT = (
    "run `docker swarm init` on that engine to make it a manager, or point "
    "--engine-endpoint at a manager of your swarm"
)


@dataclass(frozen=True)
class ServiceRequest:
    """What ``POST /services/create`` gets for one task, as plain data (tests compare it)."""

    body: dict[str, Any]
    files: tuple[tuple[str, str], ...]  # (path in the container, secret name)


def service_request(spec: TaskSpec, host: str, secrets: Mapping[str, str]) -> ServiceRequest:
    """The service for one task: one replica, host networking, digest-pinned, ``--init``,
    limits and reservations, the stop signal and grace period, no restarts, no update
    config, the task's files as Swarm secrets (``secrets``: path -> secret id), and the
    placement: the platform's chosen node and the stage's constraints.

    ``host`` is what the app binds (``HOST``): the chosen node's address, or 0.0.0.0 when
    Swarm picks the node.
    """
    labels = {**spec.labels, LABEL_PORT: str(spec.port)}
    constraints = list(spec.placement.constraints)
    if spec.placement.node:
        constraints.append(f"node.id == {spec.placement.node}")
    files = tuple((path, _secret_name(spec.name, index)) for index, path in enumerate(spec.files))
    container: dict[str, Any] = {
        "Image": spec.image,
        "Labels": labels,
        "Env": [f"{k}={v}" for k, v in {**spec.env, "PORT": str(spec.port), "HOST": host}.items()],
        "Init": True,
        "StopSignal": "SIGTERM",
        "StopGracePeriod": int(math.ceil(spec.stop_timeout) * NANO),
    }
    if files:
        container["Secrets"] = [
            {
                # Docker's own default for secrets: readable by the app whatever its USER
                # (Swarm takes a numeric uid only, and the image is not on the manager to
                # resolve a name). The file is on the task's own tmpfs, seen by no one else.
                "File": {"Name": path, "UID": "0", "GID": "0", "Mode": 0o444},
                "SecretID": secrets[path],
                "SecretName": name,
            }
            for path, name in files
        ]
    resources = {"NanoCPUs": int(spec.cpu * NANO), "MemoryBytes": spec.memory}
    body = {
        "Name": spec.name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": resources, "Reservations": dict(resources)},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": constraints},
            "Networks": [{"Target": "host"}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }
    return ServiceRequest(body, files)


def _secret_name(task: str, index: int) -> str:
    return f"{task}-file{index}"


class SwarmEngine(DockerApiEngine):
    """Tasks as one-replica Swarm services, spread over the nodes of one swarm."""

    name: ClassVar[str] = "swarm"
    _who = "the swarm manager"
    supports_events: ClassVar[bool] = True
    supports_nodes: ClassVar[bool] = True
    supports_local_images: ClassVar[bool] = True  # the builds run on this machine's engine

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: int = 60,
        ping_timeout: int = PING_TIMEOUT,
        listing_timeout: int = LISTING_TIMEOUT,
        change_timeout: int = CHANGE_TIMEOUT,
        poll: float = 1.0,
        stop_margin: float = 20.0,
        start_timeout: float = 300.0,
        placement_wait: float = 30.0,
        reap_wait: float = 3.0,
    ) -> None:
        super().__init__(endpoint, timeout, ping_timeout, listing_timeout, change_timeout)
        # How often the event stream lists the tasks: Swarm has events for services and
        # nodes, not for the state of their tasks (a task that exits on a worker).
        self._poll = poll
        self._stop_margin = stop_margin  # a stop waits its grace period plus this
        # A start waits until the node runs the task (its pull included), as a docker start
        # does; one that never runs (no node can take it, the pull failed) is an error.
        self._start_timeout = start_timeout
        self._placement_wait = min(placement_wait, start_timeout)
        self._reap_wait = reap_wait  # a remove waits this long for Swarm's reaper
        # Swarm reaps the task of a service scaled to 0 soon after it ends, and its exit
        # code with it: the last ended state seen of each service, until it is removed.
        self._ended: dict[str, TaskInfo] = {}
        self._ended_lock = threading.Lock()
        # The names of the services whose start() has not returned: listed by no one but
        # that start (as a docker start's container is not there while its image is
        # pulled). A start that fails removes its service; seen by the task watch
        # meanwhile, it would count as a second failure (a task that exited without a
        # status). By name, and from before the service exists: hidden by id only once
        # Swarm answered, a service listed in between and hidden after looked removed
        # to the event stream, and the task watch then ignored the task for good.
        self._starting: set[str] = set()

    # -- the seam -----------------------------------------------------------------------------

    def ping(self) -> None:
        with self._quick() as api:
            self._verify(api)
            self._answers("GET /nodes", api.nodes)
            self._answers("GET /services", api.services, filters={"label": [LABEL_PLATFORM]})
            self._answers("GET /tasks", api.tasks, filters={"label": [LABEL_PLATFORM]})

    def verify(self) -> None:
        with self._quick() as api:
            self._verify(api)

    def _verify(self, api: Any) -> None:
        info = self._call(api.info)
        swarm = info.get("Swarm") or {}
        where = self._where()
        if swarm.get("LocalNodeState") != "active":
            raise EngineMisfit(
                f"the Docker engine at {where} is not part of a swarm, so the swarm engine "
                "cannot run tasks there",
                endpoint=where,
                hint=_SWARM_HINT,
            )
        if not swarm.get("ControlAvailable"):
            raise EngineMisfit(
                f"the Docker engine at {where} is a swarm worker, not a swarm manager",
                endpoint=where,
                hint=_SWARM_HINT,
            )

    def start(self, spec: TaskSpec) -> TaskInfo:
        split_digest_reference(spec.image)
        if spec.network_mode != "host":
            raise EngineError(
                f"task {spec.name}: the swarm engine runs tasks with host networking only",
                hint="set the platform's network mode to host",
            )
        node = self._pinned_node(spec)
        host = node.address if node is not None and node.address else "0.0.0.0"
        secrets = self._create_secrets(spec)
        request = service_request(spec, host, secrets)
        with self._ended_lock:
            self._starting.add(spec.name)
        try:
            try:
                created = self._post("/services/create", request.body, self._auth_header(spec))
            except StackyardError:
                self._remove_secrets(spec.name)
                raise
            return self._started(str(created["ID"]), spec.name)
        finally:
            with self._ended_lock:
                self._starting.discard(spec.name)

    def _hidden(self, service: Mapping[str, Any]) -> bool:
        """A service whose start() has not returned yet."""
        name = str((service.get("Spec") or {}).get("Name", ""))
        with self._ended_lock:
            return name in self._starting

    def _started(self, service_id: str, name: str) -> TaskInfo:
        """The task once its node runs it (or it ran and ended); a task that never gets to
        run is removed, and its reason raised as EngineError."""
        deadline = time.monotonic() + self._start_timeout
        room_deadline = time.monotonic() + self._placement_wait
        pause = 0.02
        while True:
            info = self.inspect(service_id)
            if info.state is TaskState.RUNNING:
                return info
            if info.state is TaskState.EXITED:
                if info.started_at is not None:
                    return info  # it ran, and ended by itself: the caller sees how
                reason = info.error or "it ended before it ran"
                if _NO_ROOM not in reason:
                    break
                if time.monotonic() > room_deadline:
                    reason += f"; still no room after {self._placement_wait:.0f} s"
                    break
            if time.monotonic() > deadline:
                reason = f"it did not run within {self._start_timeout:.0f} s"
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        try:
            self.remove(service_id)
        except StackyardError as exc:
            log.warning("task %s failed to start; removing it failed: %s", name, exc)
        raise EngineError(f"task {name} did not run: {reason}")

    def list(self, labels: Mapping[str, str]) -> list[TaskInfo]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        api = self._listing_api()  # each call within the listing timeout
        services = self._listed("GET /services", api.services, filters=filters)
        tasks = self._listed("GET /tasks", api.tasks, filters=filters)
        nodes = {node.id: node for node in self.nodes()}
        current = _current_tasks(tasks)
        moved = _moved(tasks)
        return [
            self._remember(_task_info(s, current.get(str(s["ID"])), nodes, str(s["ID"]) in moved))
            for s in services
            if not self._hidden(s)
        ]

    def inspect(self, task_id: str) -> TaskInfo:
        # Listing-sized calls: within the listing timeout, each named when it does not answer
        # (a start waits on these, and the watch asks them after an event).
        api = self._listing_api()
        service = self._service(api, task_id)
        service_id = str(service["ID"])
        tasks = self._service_tasks(api, service_id)
        nodes = {node.id: node for node in self.nodes()}
        task = _current_tasks(tasks).get(service_id)
        return self._remember(_task_info(service, task, nodes, service_id in _moved(tasks)))

    def _service(self, api: Any, task_id: str, *, missing_ok: bool = False) -> Any:
        """Task ``task_id``'s service, asked with ``api`` (a manager that does not answer is
        said not to have answered ``GET /services/<id>``). One that does not exist: None
        when ``missing_ok`` (a stop of it has nothing to do), else NotFoundError."""
        try:
            return self._listed(
                f"GET /services/{task_id[:12]}",
                api.inspect_service,
                task_id,
                missing=f"task {task_id}",
            )
        except NotFoundError:
            if missing_ok:
                return None
            raise

    def _remember(self, info: TaskInfo) -> TaskInfo:
        """The task as listed, with the exit code and end Swarm reaped filled in from what
        was seen of it before (a stopped task keeps saying how it ended)."""
        if info.state is not TaskState.EXITED:
            return info
        with self._ended_lock:
            if info.exit_code is not None:
                self._ended[info.id] = info
                return info
            seen = self._ended.get(info.id)
        if seen is None:
            return info
        return replace(
            info,
            exit_code=seen.exit_code,
            started_at=info.started_at or seen.started_at,
            finished_at=seen.finished_at or info.finished_at,
            error=info.error or seen.error,
        )

    def stop(self, task_id: str, timeout: float) -> None:
        """Scale the service to 0: Swarm sends SIGTERM, and SIGKILL after the task's own
        grace period (its spec's stop timeout). Waits until the task has ended, or its node
        is gone; EngineError when it has not ended by then."""
        service = self._service(self._listing_api(), task_id, missing_ok=True)
        if service is None:
            return
        if _replicas(service) != 0:
            self._scale(service, 0)
        grace = _grace(service) or timeout
        deadline = time.monotonic() + grace + self._stop_margin
        while time.monotonic() < deadline:
            try:
                info = self.inspect(task_id)
            except NotFoundError:
                return
            if info.state is TaskState.EXITED:
                return
            time.sleep(0.2)
        raise EngineError(
            f"task {task_id} did not stop within {grace + self._stop_margin:.0f} s",
            hint="is its node up? `stackyard nodes` shows each node's state",
        )

    def remove(self, task_id: str) -> None:
        call = f"GET /services/{task_id[:12]}"
        try:
            service = self._listing_api().inspect_service(task_id)
            if _replicas(service) == 0:  # stopped: Swarm's reaper deletes its task soon
                self._wait_reaped(str(service["ID"]))
            call = f"DELETE /services/{task_id[:12]}"
            self._change_api().remove_service(task_id)
        except docker.errors.NotFound:
            return
        except CALL_ERRORS as exc:
            raise self._refused_in(call, f"cannot remove task {task_id}", exc) from exc
        with self._ended_lock:
            self._ended.pop(str(service["ID"]), None)
        self._remove_secrets(str(service["Spec"]["Name"]))

    def _service_tasks(self, api: Any, service_id: str) -> builtins.list[Any]:
        """The Swarm tasks of one service, asked with ``api``."""
        tasks = self._listed("GET /tasks", api.tasks, filters={"service": service_id})
        # A filter on a service id also matches ids it prefixes: keep this service's own.
        return [t for t in tasks if t.get("ServiceID") == service_id]

    def _wait_reaped(self, service_id: str) -> None:
        """Wait (up to ``reap_wait`` seconds) until Swarm's task reaper has deleted the
        service's tasks it marked for removal (a stop scales the service to 0, and the
        reaper deletes the task soon after it ends). Docker 20.10's manager panics when a
        service is removed while the reaper deletes one of its tasks (a nil dereference in
        swarmkit's ``SetServiceTasksRemove``, fixed in later versions): the engine died,
        and the rest of that deletion failed. A task that never ends (its node is down)
        is not waited for past the bound, nor a manager that does not answer the listing
        (the removal then says so itself)."""
        deadline = time.monotonic() + self._reap_wait
        api = self._listing_api()
        while True:
            try:
                tasks = self._service_tasks(api, service_id)
            except StackyardError:
                return
            pending = [t for t in tasks if t.get("DesiredState") == _REAPED]
            if not pending or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> TaskLog:
        self._service(self._listing_api(), task_id)
        return self._log(task_id, tail=tail, follow=follow)

    def events(self, labels: Mapping[str, str], *, window: float) -> TaskEvents:
        """Swarm's service and node events, and a list of the tasks every ``poll`` seconds
        (a task's state has no event of its own); each change of one of our tasks as a
        TaskEvent, from the moment this returns, for ``window`` seconds."""
        follower = _Follower(self, dict(labels), self._poll)
        now = time.time()
        stream = self._event_stream(
            {"type": ["service", "node"]},
            f"{now:.6f}",
            math.ceil(now + max(1.0, window)),
            window,
        )
        try:
            follower.start(stream, time.monotonic() + max(1.0, window))
        except BaseException:
            stream.close()
            raise
        return TaskEvents(follower.events(), follower.close)

    # -- nodes --------------------------------------------------------------------------------

    def nodes(self) -> builtins.list[NodeInfo]:
        return [_node_info(node) for node in self._listed("GET /nodes", self._listing_api().nodes)]

    def node_use(self) -> dict[str, NodeUse]:
        """Every Swarm task meant to run (of any service, ours or not) on each node, and
        the cpu and memory they reserve: Swarm's own account, which its scheduler uses."""
        api = self._listing_api()
        tasks = self._listed("GET /tasks", api.tasks, filters={"desired-state": "running"})
        # A removed service's tasks stay "running" for a moment (Swarm's orchestrator marks
        # them for removal after the DELETE answered): the services listed after the tasks
        # say which are gone, so a deploy that just removed one does not count it.
        services = self._listed("GET /services", api.services)
        return _node_use(tasks, {str(service.get("ID")) for service in services})

    def update_node(
        self,
        node_id: str,
        *,
        availability: Availability | None = None,
        labels: Mapping[str, str | None] | None = None,
    ) -> NodeInfo:
        api, changes = self._listing_api(), self._change_api()
        for attempt in range(3):
            node = self._call(api.inspect_node, node_id, missing=f"node {node_id}")
            spec = dict(node.get("Spec") or {})
            if availability is not None:
                spec["Availability"] = str(availability)
            merged = dict(spec.get("Labels") or {})
            for key, value in (labels or {}).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            spec["Labels"] = merged
            try:
                changes.update_node(node["ID"], node["Version"]["Index"], spec)
                break
            except docker.errors.APIError as exc:
                if "out of sequence" in str(exc.explanation) and attempt < 2:
                    continue  # changed meanwhile: read it again
                raise self._refused(f"cannot change node {node_id}", exc) from exc
            except CALL_ERRORS as exc:
                call = f"POST /nodes/{node_id[:12]}/update"
                raise self._refused_in(call, f"cannot change node {node_id}", exc) from exc
        return _node_info(self._call(api.inspect_node, node_id, missing=f"node {node_id}"))

    # -- steps --------------------------------------------------------------------------------

    def _pinned_node(self, spec: TaskSpec) -> NodeInfo | None:
        if not spec.placement.node:
            return None
        for node in self.nodes():
            if node.id == spec.placement.node:
                return node
        raise EngineError(
            f"task {spec.name}: node {spec.placement.node} is not in the swarm (any more)",
            hint="`stackyard nodes` lists the nodes",
        )

    def _create_secrets(self, spec: TaskSpec) -> dict[str, str]:
        """One Swarm secret per file of the task (its env file): Swarm mounts it at its
        path (mode 0444, on the task's tmpfs), so no file is ever written on a node by hand."""
        api = self._change_api()
        made: dict[str, str] = {}
        for index, (path, content) in enumerate(spec.files.items()):
            labels = {LABEL_TASK: spec.name, LABEL_PLATFORM: spec.labels.get(LABEL_PLATFORM, "")}
            try:
                created = api.create_secret(
                    _secret_name(spec.name, index), content.encode("utf-8"), labels=labels
                )
            except CALL_ERRORS as exc:
                self._remove_secrets(spec.name)
                what = f"task {spec.name}: cannot store its file {path}"
                raise self._refused_in("POST /secrets/create", what, exc) from exc
            made[path] = str(created["ID"])
        return made

    def _remove_secrets(self, task_name: str) -> None:
        api = self._change_api()
        try:
            for secret in api.secrets(filters={"label": f"{LABEL_TASK}={task_name}"}):
                try:
                    api.remove_secret(secret["ID"])
                except docker.errors.NotFound:
                    continue
        except CALL_ERRORS as exc:
            # The service is gone; a secret left behind holds no task. Say so, go on.
            log.warning("task %s: could not remove its secrets: %s", task_name, exc)

    def _auth_header(self, spec: TaskSpec) -> dict[str, str]:
        """``--with-registry-auth``: the manager hands the login to the node that pulls."""
        if spec.login is None:
            return {}
        login = spec.login
        encoded = docker.auth.encode_header(
            {
                "username": login.username,
                "password": login.password,
                "serveraddress": login.registry,
            }
        )
        return {"X-Registry-Auth": encoded.decode("ascii")}

    def _scale(self, service: Mapping[str, Any], replicas: int) -> None:
        api = self._change_api()
        for attempt in range(3):
            call = f"POST /services/{str(service['ID'])[:12]}/update"
            try:
                api.update_service(
                    service["ID"],
                    service["Version"]["Index"],
                    mode={"Replicated": {"Replicas": replicas}},
                    fetch_current_spec=True,
                )
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if "out of sequence" in str(exc.explanation) and attempt < 2:
                    service = self._listed(
                        f"GET /services/{str(service['ID'])[:12]}",
                        self._listing_api().inspect_service,
                        service["ID"],
                    )
                    continue
                raise self._refused(f"cannot stop task {service['ID']}", exc) from exc
            except CALL_ERRORS as exc:
                raise self._refused_in(call, f"cannot stop task {service['ID']}", exc) from exc

    # -- plumbing -----------------------------------------------------------------------------

    def _post(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
        """A POST with headers of our own (the SDK's create_service reads the login from a
        config file; the task's login is passed here instead)."""
        api = self._change_api()
        url = engine_url(api, path)
        try:
            # requests' own post: the client's timeout is the SDK's to pass, so pass it here
            # (without one it waited for ever on a manager that never answered).
            response = api.post(
                url,
                data=json.dumps(body),
                headers={"Content-Type": "application/json", **headers},
                timeout=self._change_timeout,
            )
            raise_for_status(response)
            return response.json()
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise EngineError(
                    f"cannot create task {body.get('Name')}: the name is already in use "
                    f"({exc.explanation or exc})"
                ) from exc
            raise self._refused(f"cannot create task {body.get('Name')}", exc) from exc
        except (*CALL_ERRORS, ValueError) as exc:
            what = f"cannot create task {body.get('Name')}"
            raise self._refused_in(f"POST {path}", what, exc) from exc

    def _logs_path(self, task_id: str) -> str:
        return f"/services/{task_id[:12]}/logs"

    def _explained(self, what: str, explanation: str) -> StackyardError:
        if _NOT_A_MANAGER in explanation:
            return EngineMisfit(
                f"{what}: the Docker engine at {self._where()} is not a swarm manager",
                endpoint=self._where(),
                hint=_SWARM_HINT,
            )
        return EngineError(f"{what}: {explanation}")

    def _unreachable(self, exc: Exception) -> EngineUnreachable:
        return EngineUnreachable(
            f"the swarm manager at {self._where()} did not answer: {unreachable_reason(exc)}",
            endpoint=self._where(),
            hint="start it (scripts/setup-host --swarm-nodes 3 makes a test swarm), or set "
            "--engine-endpoint to a manager's socket",
        )

    def _where(self) -> str:
        return self._base_url or "unix:///var/run/docker.sock"


# -- Swarm's records as TaskInfo and NodeInfo --------------------------------------------------


def _current_tasks(tasks: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each service's current Swarm task (a service has one replica and no restarts): the
    newest, except while Swarm moves the task (its service updated start-first): then the
    one that runs, until the new one runs too. A task on its way has no node yet, and seen
    as the current one it would look like a task that stopped running."""
    newest: dict[str, Mapping[str, Any]] = {}
    running: dict[str, Mapping[str, Any]] = {}
    for task in tasks:
        service = str(task.get("ServiceID", ""))
        for found in (newest, *([running] if _runs(task) else [])):
            if service not in found or _created(task) > _created(found[service]):
                found[service] = task
    current = {}
    for service, task in newest.items():
        on_its_way = str((task.get("Status") or {}).get("State", "")) in _ON_ITS_WAY
        current[service] = running[service] if on_its_way and service in running else task
    return current


def _moved(tasks: list[Mapping[str, Any]]) -> set[str]:
    """The services with more than one Swarm task: Swarm moved theirs (an operator's
    ``docker service update``, a forced drain), as a service has one replica and no
    restarts. While its current task is on its way, the task is moving."""
    seen: set[str] = set()
    moved: set[str] = set()
    for task in tasks:
        service = str(task.get("ServiceID", ""))
        (moved if service in seen else seen).add(service)
    return moved


def _created(task: Mapping[str, Any]) -> int:
    """When Swarm created the task, in nanoseconds (-1: it does not say)."""
    created = docker_nanos(task.get("CreatedAt"))
    return -1 if created is None else created


# Go's RFC 3339 with nanoseconds, as the Docker API writes times: the fraction has its
# trailing zeros trimmed (``05.1Z``, ``05.15Z``, ``05Z``), so two times of the same second
# do not compare as strings (``05.1Z`` > ``05.15Z``, ``05Z`` > ``05.5Z``).
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def docker_nanos(value: object) -> int | None:
    """A time the Docker API wrote, in nanoseconds since the epoch (exact: datetime keeps
    microseconds only); None when it is absent or not such a time."""
    match = _RFC3339.fullmatch(str(value or ""))
    if match is None:
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    seconds = (datetime.fromisoformat(match[1] + zone) - _EPOCH) // timedelta(seconds=1)
    return seconds * NANO + int((match[2] or "").ljust(9, "0"))


def _runs(task: Mapping[str, Any]) -> bool:
    """Running, and meant to: not a task Swarm is shutting down."""
    state = str((task.get("Status") or {}).get("State", ""))
    return state == _RUNNING and str(task.get("DesiredState", "")) == _RUNNING


def _replicas(service: Mapping[str, Any]) -> int:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas", 1))


def _grace(service: Mapping[str, Any]) -> float:
    container = ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return int(container.get("StopGracePeriod") or 0) / NANO


def _pinned(service: Mapping[str, Any]) -> str:
    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
    for constraint in (template.get("Placement") or {}).get("Constraints") or []:
        match = _PINNED.fullmatch(str(constraint).strip())
        if match:
            return match[1]
    return ""


def _task_info(
    service: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    nodes: Mapping[str, NodeInfo],
    moved: bool = False,
) -> TaskInfo:
    spec = service.get("Spec") or {}
    labels = {str(k): str(v) for k, v in (spec.get("Labels") or {}).items()}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    port_label = labels.get(LABEL_PORT, "")
    port = int(port_label) if port_label.isdigit() else None
    node_id = str((task or {}).get("NodeID") or "") or _pinned(service)
    node = nodes.get(node_id)
    state, exit_code, error, started, finished = _task_state(service, task, node, moved)
    address = None
    # A moving task answers nowhere until its new Swarm task runs (on the node it was
    # pinned to, its address is the old one again, but nothing listens there meanwhile).
    if port is not None and node is not None and node.address and state is not TaskState.MOVING:
        address = Address(node.address, port)
    return TaskInfo(
        id=str(service["ID"]),
        name=str(spec.get("Name", "")),
        image=str(container.get("Image", "")),
        labels=labels,
        state=state,
        health=Health.NONE,
        port=port,
        exit_code=exit_code,
        started_at=started,
        finished_at=finished,
        error=error,
        address=address,
        node=node_id,
    )


def _task_state(
    service: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    node: NodeInfo | None,
    moved: bool = False,
) -> tuple[TaskState, int | None, str, datetime | None, datetime | None]:
    """(state, exit code, error, started, finished) of a service's one task; ``moved``:
    the service had a task before this one (a task on its way is then MOVING)."""
    if task is None:  # not scheduled yet, or stopped and reaped
        if _replicas(service) == 0:
            return TaskState.EXITED, None, "", None, _time(service.get("UpdatedAt"))
        return TaskState.CREATED, None, "", None, None
    status = task.get("Status") or {}
    swarm_state = str(status.get("State", ""))
    stamp = _time(status.get("Timestamp"))
    created = _time(task.get("CreatedAt"))
    container = status.get("ContainerStatus") or {}
    ran = bool(container.get("ContainerID"))
    exit_code = int(container.get("ExitCode", 0)) if ran else None
    err = str(status.get("Err") or "")
    where = f"node {node.name} ({node.address or node.id})" if node is not None else "its node"
    # A task whose node is down, or no longer in the swarm (`docker node rm`: Swarm then
    # never hears from it again and keeps its last state), has ended.
    lost = ""
    if node is not None and not node.ready:
        lost = f"lost: {where} is {node.state}"
    elif node is None and task.get("NodeID"):
        lost = f"lost: node {task['NodeID']} left the swarm"
    if swarm_state == _RUNNING:
        if lost:
            return TaskState.EXITED, None, lost, stamp, stamp
        return TaskState.RUNNING, None, "", stamp, None
    if swarm_state in _ON_ITS_WAY:
        if lost:
            return TaskState.EXITED, None, lost, None, stamp
        if swarm_state == "pending" and err:
            constraints = (
                ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("Placement") or {}
            ).get("Constraints") or []
            why = f"{err} (constraints: {', '.join(constraints)})"
            if moved:
                # An operator's move that no node can take (yet): Swarm keeps the new task
                # pending and places it once a node fits, or the move is undone.
                return TaskState.MOVING, None, f"waits for a node: {why}", None, None
            return TaskState.EXITED, None, f"Swarm cannot place it: {why}", None, stamp
        return TaskState.MOVING if moved else TaskState.CREATED, None, "", None, None
    if swarm_state == "rejected" and err.startswith("No such image"):
        err = f"{where} could not pull the image: {err} (the node's own log has the pull error)"
    elif ran and swarm_state != "rejected":
        err = ""  # its exit code says it
    elif err:
        err = f"{swarm_state} on {where}: {err}"
    return TaskState.EXITED, exit_code, err, created if ran else None, stamp


def _node_info(node: Mapping[str, Any]) -> NodeInfo:
    spec = node.get("Spec") or {}
    status = node.get("Status") or {}
    description = node.get("Description") or {}
    labels = {str(k): str(v) for k, v in (spec.get("Labels") or {}).items()}
    label = labels.get(NODE_LABEL_ADDRESS, "")
    problem = address_problem(label) if label else ""
    if label and not problem:
        address, source = label, "label"
    else:
        # A manager's advertise address is right; Status.Addr is what Swarm saw the node
        # connect from (127.0.0.1 on a loopback cluster, a NAT's address on real ones).
        manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
        address = manager.rpartition(":")[0] if manager else str(status.get("Addr") or "")
        source = "engine"
    if problem:
        problem = f"its label {NODE_LABEL_ADDRESS}: {problem}"
    engine = description.get("Engine") or {}
    platform = description.get("Platform") or {}
    resources = description.get("Resources") or {}
    return NodeInfo(
        id=str(node["ID"]),
        name=str(description.get("Hostname", "")),
        address=address,
        address_from=source,
        role=str(spec.get("Role", "worker")),
        state=_node_state(str(status.get("State", "unknown"))),
        availability=Availability(str(spec.get("Availability", "active"))),
        labels=labels,
        address_problem=problem,
        engine_labels={str(k): str(v) for k, v in (engine.get("Labels") or {}).items()},
        platform={
            "os": str(platform.get("OS", "")).lower(),
            "arch": str(platform.get("Architecture", "")),
        },
        cpu=int(resources.get("NanoCPUs") or 0) / NANO,
        memory=int(resources.get("MemoryBytes") or 0),
    )


def _node_use(tasks: builtins.list[Mapping[str, Any]], services: Set[str]) -> dict[str, NodeUse]:
    """Node id -> its tasks meant to run (a task not placed yet has no node, a task of a
    service not in ``services`` was removed), what they reserve, and whose the Stackyard
    tasks among them are (their container labels)."""
    use: dict[str, NodeUse] = {}
    for task in tasks:
        node_id = str(task.get("NodeID") or "")
        if not node_id or str(task.get("DesiredState", "")) != _RUNNING:
            continue
        if str(task.get("ServiceID")) not in services:
            continue
        spec = task.get("Spec") or {}
        reserved = (spec.get("Resources") or {}).get("Reservations") or {}
        labels = (spec.get("ContainerSpec") or {}).get("Labels") or {}
        use[node_id] = use.get(node_id, NodeUse()) + NodeUse(
            tasks=1,
            cpu=int(reserved.get("NanoCPUs") or 0) / NANO,
            memory=int(reserved.get("MemoryBytes") or 0),
            owners=owner_of({str(k): str(v) for k, v in labels.items()}),
        )
    return use


def _node_state(state: str) -> NodeState:
    try:
        return NodeState(state)
    except ValueError:
        return NodeState.UNKNOWN


def _time(value: object) -> datetime | None:
    if not value or str(value).startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


# -- the event stream ---------------------------------------------------------------------------

# service id -> what its TaskInfo depends on: (task id, state, node, "ran", replicas, err)
_Snapshot = dict[str, tuple[str, ...]]


class _Follower:
    """Turns Swarm's service and node events plus a periodic task list into TaskEvents."""

    def __init__(self, engine: SwarmEngine, labels: dict[str, str], poll: float) -> None:
        self._engine = engine
        self._labels = labels
        self._poll = poll
        self._pokes: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._stream: Any = None
        self._deadline = 0.0
        self._tasks: _Snapshot = {}
        self._labels_of: dict[str, dict[str, str]] = {}
        self._nodes: dict[str, tuple[str, ...]] = {}

    def start(self, stream: Any, deadline: float) -> None:
        """Read Swarm's events on a thread; take the first snapshot now (not reported)."""
        self._stream, self._deadline = stream, deadline
        self._tasks, self._labels_of = self._snapshot()
        self._nodes = self._node_snapshot()
        threading.Thread(target=self._read, name="swarm-events", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._pokes.put(None)
        stream = self._stream
        if stream is not None:
            stream.close()

    def events(self) -> Iterator[TaskEvent]:
        try:
            while not self._closed.is_set():
                left = self._deadline - time.monotonic()
                if left <= 0:
                    return
                nodes_changed = self._wait(min(self._poll, left))
                if self._closed.is_set():
                    return
                yield from self._changes(nodes_changed)
        except StackyardError:
            raise
        except (docker.errors.DockerException, OSError, ValueError) as exc:
            raise EngineError(f"following the swarm broke: {exc}") from exc

    def _wait(self, timeout: float) -> bool:
        """Wait for an event or the next poll; True when a node event came."""
        nodes = False
        try:
            poke = self._pokes.get(timeout=timeout)
            nodes = poke == "node"
            while True:  # take every event that came meanwhile: one listing serves them all
                poke = self._pokes.get_nowait()
                nodes = nodes or poke == "node"
        except queue.Empty:
            pass
        return nodes

    def _read(self) -> None:
        try:
            for message in self._stream:
                self._pokes.put(str(message.get("Type", "")))
        except (*CALL_ERRORS, ValueError) as exc:
            if not self._closed.is_set():
                log.warning("swarm event stream broke: %s; listing goes on", exc)

    def _changes(self, nodes_changed: bool) -> Iterator[TaskEvent]:
        if nodes_changed:
            nodes = self._node_snapshot()
            for node_id in sorted(nodes.keys() | self._nodes.keys()):
                if nodes.get(node_id) != self._nodes.get(node_id):
                    yield TaskEvent(node_id, TaskEventKind.NODE, {})
            self._nodes = nodes
        tasks, labels_of = self._snapshot()
        for service_id in sorted(tasks.keys() | self._tasks.keys()):
            before, after = self._tasks.get(service_id), tasks.get(service_id)
            if before == after:
                continue
            labels = labels_of.get(service_id) or self._labels_of.get(service_id, {})
            for kind in _kinds(before, after):
                yield TaskEvent(service_id, kind, labels)
        self._tasks, self._labels_of = tasks, labels_of

    def _snapshot(self) -> tuple[_Snapshot, dict[str, dict[str, str]]]:
        engine = self._engine
        api = engine._listing_api()  # a tick that does not answer fails within its timeout
        filters = {"label": [f"{key}={value}" for key, value in self._labels.items()]}
        services = engine._listed("GET /services", api.services, filters=filters)
        tasks = _current_tasks(engine._listed("GET /tasks", api.tasks, filters=filters))
        snapshot: _Snapshot = {}
        labels_of: dict[str, dict[str, str]] = {}
        for service in services:
            service_id = str(service["ID"])
            if self._engine._hidden(service):
                continue  # its start() reports it
            task = tasks.get(service_id) or {}
            status = task.get("Status") or {}
            container = status.get("ContainerStatus") or {}
            snapshot[service_id] = (
                str(task.get("ID", "")),
                str(status.get("State", "")),
                str(task.get("NodeID", "")),
                "ran" if container.get("ContainerID") else "",
                str(_replicas(service)),
                str(status.get("Err") or ""),  # why Swarm keeps it pending, say
            )
            labels_of[service_id] = {
                str(k): str(v) for k, v in ((service.get("Spec") or {}).get("Labels") or {}).items()
            }
        return snapshot, labels_of

    def _node_snapshot(self) -> dict[str, tuple[str, ...]]:
        return {
            node.id: (node.state, node.availability, json.dumps(dict(node.labels), sort_keys=True))
            for node in self._engine.nodes()
        }


def _kinds(before: tuple[str, ...] | None, after: tuple[str, ...] | None) -> list[TaskEventKind]:
    """The events that take a task from ``before`` to ``after`` (snapshots; None: none),
    in the order they happened, even when one listing saw several of them at once."""
    if after is None:  # a running task that is removed dies first, as a container does
        ran = before is not None and _reached(before) == 1
        return [TaskEventKind.EXITED, TaskEventKind.REMOVED] if ran else [TaskEventKind.REMOVED]
    order = [TaskEventKind.CREATED, TaskEventKind.STARTED, TaskEventKind.EXITED]
    reached = _reached(before) if before is not None else -1
    now = _reached(after)
    if now == reached == 2:
        return []  # it had ended: Swarm reaping its task says nothing new
    if now == reached == 0 and before is not None and before[0] in ("", after[0]):
        if before[5:] != after[5:]:  # still on its way, with a new reason (a move Swarm
            return [TaskEventKind.CREATED]  # cannot place): a change to read again
        return []  # the same task (or its first) moving through Swarm's pending states
    if now <= reached:
        return [order[now]] if before is not None else []  # changed, no further on
    kinds = order[reached + 1 : now + 1]
    if now == 2 and reached < 1 and after[3] != "ran":
        kinds = [k for k in kinds if k is not TaskEventKind.STARTED]  # it never ran
    return kinds


def _reached(snapshot: tuple[str, ...]) -> int:
    """0 created, 1 started, 2 exited: how far the service's task has come."""
    state, replicas = snapshot[1], snapshot[4]
    if state in _ENDED or (not state and replicas == "0"):
        return 2
    if state == _RUNNING:
        return 1
    return 0
