"""The ``docker`` engine: tasks as containers of one local Docker Engine (the SDK lives here).

The deploy executor calls it through the Engine seam. Every ``docker.errors`` exception is
translated at this boundary: unreachable -> ComponentError, NotFound -> NotFoundError, any
other refusal -> EngineError.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tarfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, ClassVar

import docker
import docker.auth
import docker.errors
from docker.utils.json_stream import json_stream

from stackyard.engines.base import (
    CHANGE_TIMEOUT,
    LABEL_PLATFORM,
    LABEL_PORT,
    LISTING_TIMEOUT,
    PING_TIMEOUT,
    PULL_SILENCE,
    Address,
    EngineError,
    EngineUnreachable,
    Health,
    TaskEvent,
    TaskEventKind,
    TaskEvents,
    TaskInfo,
    TaskLog,
    TaskSpec,
    TaskState,
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

_STATES = {
    "created": TaskState.CREATED,
    "running": TaskState.RUNNING,
    "restarting": TaskState.RUNNING,
    "paused": TaskState.RUNNING,
    "removing": TaskState.EXITED,
    "exited": TaskState.EXITED,
    "dead": TaskState.EXITED,
}
log = logging.getLogger(__name__)

_NEVER = "0001-01-01T00:00:00Z"  # Docker's zero time: the event did not happen
# Container events that change what TaskInfo says. "health_status" also matches its
# "health_status: healthy" form (the engine matches these names by prefix); exec_* events,
# one set per HEALTHCHECK run, are not asked for.
_EVENTS = {
    "create": TaskEventKind.CREATED,
    "start": TaskEventKind.STARTED,
    "die": TaskEventKind.EXITED,
    "health_status": TaskEventKind.HEALTH,
    "destroy": TaskEventKind.REMOVED,
}
_REGISTRY_HINT = "the release's image was deleted from the registry? rebuild or roll back"
# A task keeps only these capabilities of Docker's defaults. Gone above all: NET_RAW, with
# which a task on the host network reads every process's loopback traffic.
TASK_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL",
                     "NET_BIND_SERVICE"]  # fmt: skip


class DockerEngine(DockerApiEngine):
    """Tasks as containers: digest-pinned, labelled, ``--init``, limits from the spec."""

    name: ClassVar[str] = "docker"
    supports_bridge_network: ClassVar[bool] = True
    supports_image_healthcheck: ClassVar[bool] = True
    supports_events: ClassVar[bool] = True
    supports_local_images: ClassVar[bool] = True

    def __init__(
        self,
        base_url: str | None = None,
        *,
        endpoint: str | None = None,
        timeout: int = 120,
        ping_timeout: int = PING_TIMEOUT,
        listing_timeout: int = LISTING_TIMEOUT,
        change_timeout: int = CHANGE_TIMEOUT,
        pull_silence: int = PULL_SILENCE,
        task_host: str = "127.0.0.1",
    ) -> None:
        # ``endpoint`` is the platform's engine endpoint setting (``--engine-endpoint``).
        super().__init__(
            base_url or endpoint,
            timeout,
            ping_timeout,
            listing_timeout,
            change_timeout,
            pull_silence,
        )
        # Where this engine's tasks answer: they bind (host networking) or are published
        # (bridge networking) on the engine's loopback.
        self._task_host = task_host

    # -- the seam -----------------------------------------------------------------------------

    def ping(self) -> None:
        with self._quick() as api:
            self._call(api.ping)
            self._answers(
                "GET /containers/json",
                api.containers,
                all=True,
                limit=1,
                filters={"label": [LABEL_PLATFORM]},
            )

    def has_bridge_network(self) -> bool:
        """The engine's ``bridge`` network exists (dockerd without ``--bridge=none``)."""
        try:
            self._listing_api().inspect_network("bridge")
        except docker.errors.NotFound:
            return False
        except CALL_ERRORS as exc:
            what = "cannot look up the engine's bridge network"
            raise self._refused_in("GET /networks/bridge", what, exc) from exc
        return True

    def start(self, spec: TaskSpec) -> TaskInfo:
        repository, digest = split_digest_reference(spec.image)
        self._ensure_image(spec, repository, digest)
        container_id = self._create(spec)
        call = f"PUT /containers/{container_id[:12]}/archive"  # the task's files
        try:
            self._put_files(container_id, spec)
            call = f"POST /containers/{container_id[:12]}/start"
            self._change_api().start(container_id)
        except CALL_ERRORS as exc:
            self._discard(container_id, spec.name)
            raise self._refused_in(call, f"cannot start task {spec.name}", exc) from exc
        except StackyardError:
            self._discard(container_id, spec.name)
            raise
        return self.inspect(container_id)

    def list(self, labels: Mapping[str, str]) -> list[TaskInfo]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        api = self._listing_api()  # each call within the listing timeout
        summaries = self._listed("GET /containers/json", api.containers, all=True, filters=filters)
        tasks = []
        for summary in summaries:
            try:
                tasks.append(self._inspect(api, str(summary["Id"]), listing=True))
            except NotFoundError:
                continue  # removed between the listing and the inspect: it is gone
        return tasks

    def inspect(self, task_id: str) -> TaskInfo:
        # A listing-sized call (one small answer): within the listing timeout, so a start's
        # last look or the watch after an event fails soon on an engine that stopped answering.
        return self._inspect(self._listing_api(), task_id, listing=True)

    def _inspect(self, api: Any, task_id: str, *, listing: bool = False) -> TaskInfo:
        missing = f"task {task_id}"
        if listing:
            call = f"GET /containers/{task_id[:12]}/json"
            attrs = self._listed(call, api.inspect_container, task_id, missing=missing)
        else:
            attrs = self._call(api.inspect_container, task_id, missing=missing)
        return _task_info(attrs, self._task_host)

    def stop(self, task_id: str, timeout: float) -> None:
        """The engine answers once the task has ended: the SDK waits the client's timeout
        plus the grace period, so on the listing client a stop gives up ``timeout`` + 10 s
        after it was asked, not 120 s + ``timeout``."""
        try:
            self._listing_api().stop(task_id, timeout=math.ceil(timeout))
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, OSError) as exc:
            call = f"POST /containers/{task_id[:12]}/stop"
            raise self._refused_in(call, f"cannot stop task {task_id}", exc) from exc

    def remove(self, task_id: str) -> None:
        try:
            self._change_api().remove_container(task_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise self._refused(f"cannot remove task {task_id}", exc) from exc
        except CALL_ERRORS as exc:
            call = f"DELETE /containers/{task_id[:12]}"
            raise self._refused_in(call, f"cannot remove task {task_id}", exc) from exc

    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> TaskLog:
        return self._log(task_id, tail=tail, follow=follow)

    def events(self, labels: Mapping[str, str], *, window: float) -> TaskEvents:
        """``docker events`` for our containers, filtered by label and by the events that
        change a task; the engine itself ends the stream when the window is over."""
        filters = {
            "type": ["container"],
            "label": [f"{key}={value}" for key, value in labels.items()],
            "event": list(_EVENTS),
        }
        # "since" now: without it the engine first replays its buffer of past events.
        now = time.time()
        since, until = f"{now:.6f}", math.ceil(now + max(1.0, window))
        stream = self._event_stream(filters, since, until, window)
        return TaskEvents(self._task_events(stream), stream.close)

    def _task_events(self, stream: Iterator[Mapping[str, Any]]) -> Iterator[TaskEvent]:
        try:
            for message in stream:
                event = _task_event(message)
                if event is not None:
                    yield event
        except (*CALL_ERRORS, ValueError) as exc:
            raise EngineError(f"the Docker engine's event stream broke: {exc}") from exc

    # -- steps of start -----------------------------------------------------------------------

    def _ensure_image(self, spec: TaskSpec, repository: str, digest: str) -> None:
        """Pull by digest even when the engine has the image: the registry decides what is
        deployable (a release whose image was deleted fails), and the local copy is only a
        cache that still serves while the registry does not answer. Not quite on Docker
        20.10: a manifest it pulled before from the same repository comes from its content
        store without a request (docs/decisions.md, "What a pull by digest asks"), so a
        deployment first asks the registry itself, once (``DeployService.require_image``);
        a task started later (a heal) still trusts this pull."""
        try:
            self._listing_api().inspect_image(spec.image)  # within the listing timeout
            cached = True
        except docker.errors.ImageNotFound:
            cached = False
        except (docker.errors.DockerException, OSError) as exc:
            call = f"GET /images/{spec.image}/json"
            raise self._refused_in(call, f"cannot look up image {spec.image}", exc) from exc
        try:
            self._pull(spec, repository, digest)
        except ImageMissingError:
            raise
        except EngineError as exc:
            if not cached:
                raise
            log.warning("task %s: %s; starting it from the engine's copy", spec.name, exc)

    def _pull(self, spec: TaskSpec, repository: str, digest: str) -> None:
        auth = None
        if spec.login is not None:
            auth = {
                "username": spec.login.username,
                "password": spec.login.password,
                "serveraddress": spec.login.registry,
            }
        try:
            for chunk in self._pull_progress(repository, digest, auth):
                if "error" in chunk:
                    raise EngineError(
                        f"cannot pull {spec.image} for task {spec.name}: {chunk['error']}",
                        hint="is the registry up, and is the task's registry login right?",
                    )
        except docker.errors.NotFound as exc:
            raise ImageMissingError(
                f"image {spec.image} for task {spec.name} is missing from the registry: "
                f"{exc.explanation or exc}",
                hint=_REGISTRY_HINT,
            ) from exc
        except docker.errors.APIError as exc:
            raise EngineError(
                f"cannot pull {spec.image} for task {spec.name}: {exc.explanation or exc}",
                hint="is the registry up, and is the task's registry login right?",
            ) from exc
        except CALL_ERRORS as exc:
            call = f"POST /images/create, no progress for {self._pull_silence} s"
            what = f"cannot pull {spec.image} for task {spec.name}"
            raise self._refused_in(call, what, exc) from exc

    def _pull_progress(
        self, repository: str, digest: str, auth: Mapping[str, str] | None
    ) -> Iterator[Mapping[str, Any]]:
        """``POST /images/create``'s progress lines, decoded. Not the SDK's pull, which
        waits for ever (no timeout): each read here answers within the pull's silence
        bound, so a pull may take as long as it makes progress, and one the engine says
        nothing of for that long is given up."""
        api = self._api()
        headers = {"X-Registry-Auth": docker.auth.encode_header(dict(auth))} if auth else {}
        response = api.post(
            engine_url(api, "/images/create"),
            params={"fromImage": repository, "tag": digest},
            headers=headers,
            stream=True,
            timeout=self._pull_silence,
        )
        try:
            raise_for_status(response)
            yield from json_stream(response.iter_content(chunk_size=None))
        finally:
            response.close()

    def _create(self, spec: TaskSpec) -> str:
        api = self._change_api()
        arguments, host_options = container_arguments(spec)
        try:
            created = api.create_container(
                spec.image, **arguments, host_config=api.create_host_config(**host_options)
            )
        except CALL_ERRORS as exc:
            what = f"cannot create task {spec.name} from {spec.image}"
            raise self._refused_in("POST /containers/create", what, exc) from exc
        return str(created["Id"])

    def _put_files(self, container_id: str, spec: TaskSpec) -> None:
        if not spec.files:
            return
        owner = self._task_user(container_id, spec.name)
        for path, content in spec.files.items():
            self._put_file(container_id, PurePosixPath("/", path), content, owner)

    def _put_file(
        self, container_id: str, path: PurePosixPath, content: str, owner: tuple[int, int]
    ) -> None:
        # Extract under the deepest directory that already exists, so no existing directory's
        # mode or owner is touched (a tar entry for /tmp would reset its sticky bit).
        for root in path.parents:
            try:
                archive = _tar(path, root, content, owner)
                self._change_api().put_archive(container_id, str(root), archive)
                return
            except docker.errors.NotFound:
                continue
        raise EngineError(f"cannot write {path} into task {container_id}")

    def _task_user(self, container_id: str, name: str) -> tuple[int, int]:
        """The uid and gid the task runs as (the image's USER), so its files are its own:
        mode 0600 and root's would be unreadable to an app that is not root."""
        attrs = self._listed(
            f"GET /containers/{container_id[:12]}/json",
            self._listing_api().inspect_container,
            container_id,
            missing=f"task {name}",
        )
        user = str((attrs.get("Config") or {}).get("User") or "")
        if not user:
            return 0, 0
        wanted_user, _, wanted_group = user.partition(":")
        passwd = group = ""
        if not wanted_user.isdigit():
            passwd = self._read_file(container_id, "/etc/passwd")
        if wanted_group and not wanted_group.isdigit():
            group = self._read_file(container_id, "/etc/group")
        try:
            return resolve_user(wanted_user, wanted_group, passwd, group)
        except KeyError as exc:
            raise EngineError(
                f"task {name}: the image's USER {user!r} is not in its /etc/passwd or "
                f"/etc/group ({exc.args[0]})",
                hint="set USER in the Dockerfile to a user the image has, or to a uid",
            ) from exc

    def _read_file(self, container_id: str, path: str) -> str:
        """A small text file from the container's filesystem ('' when it has none)."""
        try:
            chunks, _ = self._change_api().get_archive(container_id, path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
                member = next((m for m in archive.getmembers() if m.isfile()), None)
                handle = archive.extractfile(member) if member is not None else None
                return handle.read().decode("utf-8", "replace") if handle is not None else ""
        except (docker.errors.NotFound, tarfile.TarError):
            return ""

    def _discard(self, container_id: str, name: str) -> None:
        try:
            self._change_api().remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except CALL_ERRORS as exc:
            call = f"DELETE /containers/{container_id[:12]}"
            what = f"task {name} failed to start; removing it failed"
            raise self._refused_in(call, what, exc) from exc

    # -- plumbing -----------------------------------------------------------------------------

    def _unreachable(self, exc: Exception) -> EngineUnreachable:
        return _unreachable(exc, self._base_url)


def _unreachable(exc: Exception, base_url: str | None) -> EngineUnreachable:
    where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return EngineUnreachable(
        f"the Docker engine at {where} did not answer: {unreachable_reason(exc)}",
        endpoint=where,
        hint="start it (scripts/setup-host does), or set DOCKER_HOST",
    )


def resolve_user(user: str, group: str, passwd: str, groups: str) -> tuple[int, int]:
    """uid and gid for a Dockerfile ``USER user[:group]``, from the image's passwd and group
    files; a name that is in neither raises KeyError. Without a group, the user's own (0
    for a uid the image does not list, as Docker runs it)."""
    users = _table(passwd)
    if user.isdigit():
        uid = int(user)
        gid = next((int(row[3]) for row in users.values() if row[2] == user), 0)
    else:
        row = users[user]
        uid, gid = int(row[2]), int(row[3])
    if group:
        gid = int(group) if group.isdigit() else int(_table(groups)[group][2])
    return uid, gid


def _table(text: str) -> dict[str, list[str]]:
    """/etc/passwd or /etc/group lines by name (their ':'-separated fields)."""
    rows = [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
    return {row[0]: row for row in rows if len(row) >= 4 and row[2].isdigit()}


def _tar(path: PurePosixPath, root: PurePosixPath, content: str, owner: tuple[int, int]) -> bytes:
    data = content.encode("utf-8")
    buffer = io.BytesIO()
    relative = path.relative_to(root)
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory in reversed(relative.parents[:-1]):
            entry = tarfile.TarInfo(str(directory))
            entry.type = tarfile.DIRTYPE
            entry.mode = 0o755
            archive.addfile(entry)
        entry = tarfile.TarInfo(str(relative))
        entry.size = len(data)
        entry.mode = 0o600
        entry.uid, entry.gid = owner  # the task's own user: only it (and root) can read it
        archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def _task_event(message: Mapping[str, Any]) -> TaskEvent | None:
    """A Docker event message as a TaskEvent; None for an event that changes no task."""
    action = str(message.get("Action") or message.get("status") or "")
    kind = _EVENTS.get(action.partition(":")[0].strip())
    actor = message.get("Actor") or {}
    task_id = str(actor.get("ID") or message.get("id") or "")
    if kind is None or not task_id:
        return None
    attributes = actor.get("Attributes") or {}
    return TaskEvent(task_id, kind, {str(k): str(v) for k, v in attributes.items()})


def _task_info(attrs: Mapping[str, Any], task_host: str) -> TaskInfo:
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    labels = dict(config.get("Labels") or {})
    health = state.get("Health") or {}
    log = health.get("Log") or []
    status = str(state.get("Status", ""))
    exited = _STATES.get(status, TaskState.EXITED) is TaskState.EXITED
    port = labels.get(LABEL_PORT, "")
    return TaskInfo(
        id=str(attrs["Id"]),
        name=str(attrs.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        labels=labels,
        state=_STATES.get(status, TaskState.EXITED),
        health=Health(health["Status"]) if health.get("Status") else Health.NONE,
        port=int(port) if port.isdigit() else None,
        exit_code=int(state["ExitCode"]) if exited and "ExitCode" in state else None,
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")),
        health_output=str(log[-1].get("Output", "")).strip() if log else "",
        error=str(state.get("Error") or ""),
        address=Address(task_host, int(port)) if port.isdigit() else None,
    )


def _time(value: str | None) -> datetime | None:
    if not value or value == _NEVER:
        return None
    return datetime.fromisoformat(value)


def container_arguments(spec: TaskSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``create_container`` and ``create_host_config`` get for a task, as plain data.

    Host networking: the app binds 127.0.0.1:<port>. Bridge networking: it binds
    0.0.0.0:<container port> inside, published on 127.0.0.1:<port> only.
    """
    host = "127.0.0.1" if spec.network_mode == "host" else "0.0.0.0"
    inner_port = spec.port if spec.network_mode == "host" else spec.container_port
    host_options: dict[str, Any] = {
        "init": True,
        "nano_cpus": int(spec.cpu * 1e9),
        "mem_limit": spec.memory,
        "restart_policy": {"Name": "no"},
        **task_hardening(spec),
    }
    exposed: list[tuple[int, str]] | None = None
    if spec.network_mode == "host":
        host_options["network_mode"] = "host"
    else:
        host_options["port_bindings"] = {f"{inner_port}/tcp": ("127.0.0.1", spec.port)}
        exposed = [(inner_port, "tcp")]
    arguments = {
        "name": spec.name,
        "labels": {**spec.labels, LABEL_PORT: str(spec.port)},
        "environment": {**spec.env, "PORT": str(inner_port), "HOST": host},
        "ports": exposed,
        "stop_signal": "SIGTERM",
        "stop_timeout": math.ceil(spec.stop_timeout),
    }
    return arguments, host_options


def task_hardening(spec: TaskSpec) -> dict[str, Any]:
    """What keeps a task to itself: no new privileges (setuid binaries stay unprivileged),
    few capabilities, a process limit, no swap; a read-only root when the stage asks,
    with /tmp and /run in memory."""
    options: dict[str, Any] = {
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "cap_add": list(TASK_CAPABILITIES),
        "pids_limit": spec.pids_limit,
        "memswap_limit": spec.memory,
    }
    if spec.read_only:
        options["read_only"] = True
        options["tmpfs"] = {"/tmp": "mode=1777", "/run": "mode=755"}
    return options


class ImageMissingError(EngineError):
    """The registry does not have the task's image (deleted): no cached copy may hide it."""
