"""The build container: the one container a build or release runs its spec in (the ``docker``
SDK lives here).

:func:`container_arguments` decides what the engine gets (plain data: image, mounts,
limits, no privileges); :class:`BuildContainer` creates it, attaches to its shell agent,
execs into it, and removes it. The build spec runner (buildspec/container.py) drives it.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from stackyard import docker_sdk  # noqa: F401 - the SDK with its fix, before any client
from stackyard.errors import ComponentError, ConfigError, StackyardError
from stackyard.images.dockerproxy.rules import BuildLimits
from stackyard.images.kernel_log import (
    BUILDKIT_CGROUP,
    KernelLog,
    fork_rejected_in,
    forks_rejected_in,
)

LABEL_BUILD = "dev.stackyard.build"  # "<stack>:<build number>" or "<stack>:<stage>"
LABEL_BUILD_PLATFORM = "dev.stackyard.build-platform"  # the data dir's id, or "local"
# Dropped from Docker's default capabilities. NET_RAW above all: with host networking a
# raw socket reads the loopback traffic of every other process (tokens, logins). The rest
# stay, as package managers need them (apt changes owners and drops to its own user).
_DROPPED = ["NET_RAW", "MKNOD", "AUDIT_WRITE"]


# The engine's cgroup driver, per engine address: it does not change while dockerd runs.
_CGROUP_DRIVERS: dict[str, str] = {}


class BuildContainerError(StackyardError):
    """The engine refused to make, run or reach a build container."""


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class BuildContainerSpec:
    """Everything the engine needs to make one build container."""

    image: str
    name: str
    command: list[str]
    mounts: list[Mount] = field(default_factory=list)
    network_mode: str = "host"
    limits: BuildLimits = field(default_factory=BuildLimits)
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    tmpfs: Mapping[str, str] = field(default_factory=dict)


def container_arguments(spec: BuildContainerSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``create_container`` and ``create_host_config`` get: the image's own entrypoint
    replaced by the agent, stdin open for it, the limits, and no way to more privileges."""
    arguments = {
        "name": spec.name,
        "entrypoint": spec.command,
        "command": [],
        "stdin_open": True,
        "tty": False,
        "labels": dict(spec.labels),
        "environment": dict(spec.env),
        "working_dir": "/",
    }
    host_options: dict[str, Any] = {
        "init": True,
        "network_mode": spec.network_mode,
        "binds": [
            f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}"
            for mount in spec.mounts
        ],
        "tmpfs": dict(spec.tmpfs),
        "nano_cpus": int(spec.limits.cpus * 1e9),
        "cpu_shares": spec.limits.cpu_shares,
        "mem_limit": spec.limits.memory,
        "memswap_limit": spec.limits.memory,
        "pids_limit": spec.limits.pids,
        "cap_drop": list(_DROPPED),
        "security_opt": ["no-new-privileges"],
        "restart_policy": {"Name": "no"},
        "oom_score_adj": 500,  # under memory pressure, a build goes before tasks
    }
    return arguments, host_options


@dataclass(frozen=True)
class ContainerEnd:
    """How a build container ended (or that it still runs)."""

    running: bool
    exit_code: int | None
    oom_killed: bool


class BuildContainer:
    """One build container in the local engine, from creation to removal."""

    def __init__(self, base_url: str | None = None, *, timeout: int = 120) -> None:
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                self._client = docker.from_env(timeout=timeout)
        except docker.errors.DockerException as exc:
            raise _unreachable(exc) from exc
        self._api = self._client.api
        self.id = ""
        self._kernel_log: KernelLog | None = None
        self._forks_refused = False
        self._buildkit_refusals = 0  # BuildKit RUN steps the pids controller refused

    def create(self, spec: BuildContainerSpec) -> str:
        """Create (not start) the container; a missing image is a ConfigError saying how to
        get it."""
        arguments, host_options = container_arguments(spec)
        host_config = self._api.create_host_config(**host_options)
        try:
            created = self._api.create_container(spec.image, host_config=host_config, **arguments)
        except docker.errors.ImageNotFound:
            raise ConfigError(
                f"the build image {spec.image} is not in the Docker engine",
                hint="run scripts/setup-host (it builds stackyard/build:bookworm), pull the "
                "image, or change build.image in stackyard.yml",
            ) from None
        except docker.errors.DockerException as exc:
            raise _translate(exc, "cannot create the build container") from exc
        self.id = str(created["Id"])
        self._kernel_log = KernelLog()  # from before the container's first process on
        return self.id

    def cgroup_parent(self) -> str | None:
        """The cgroup that nests this container's children (``docker build`` RUN steps):
        its own, with the cgroupfs driver (build containers set no cgroup parent, so it is
        ``/docker/<id>``); None when the engine names cgroups otherwise."""
        key = self._api.base_url
        if key not in _CGROUP_DRIVERS:
            info = self._call(self._api.info, what="cannot read the engine's settings")
            _CGROUP_DRIVERS[key] = str(info.get("CgroupDriver", ""))
        return f"/docker/{self.id}" if _CGROUP_DRIVERS[key] == "cgroupfs" else None

    def attach(self) -> Stream:
        """The container's stdin, stdout and stderr, multiplexed; attach before start."""
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        sock = self._call(
            self._api.attach_socket, self.id, params, what="cannot attach to the build container"
        )
        return Stream(sock)

    def start(self) -> None:
        self._call(self._api.start, self.id, what="cannot start the build container")

    def exec_attach(self, command: list[str], user: str) -> Stream:
        """Start ``command`` as ``user`` inside, with stdin; its multiplexed stream."""
        created = self._call(
            self._api.exec_create,
            self.id,
            command,
            stdin=True,
            user=user,
            what=f"cannot start a shell as {user} in the build container",
        )
        sock = self._call(
            self._api.exec_start, created["Id"], socket=True, what="cannot attach to the shell"
        )
        return Stream(sock)

    def exec_run(self, command: list[str], user: str = "0") -> tuple[int, str]:
        """Run ``command`` inside and wait; its exit code and output."""
        created = self._call(self._api.exec_create, self.id, command, user=user, what="cannot exec")
        output = self._call(self._api.exec_start, created["Id"], what="cannot exec")
        inspected = self._call(self._api.exec_inspect, created["Id"], what="cannot exec")
        code = inspected.get("ExitCode")
        return int(code) if code is not None else -1, bytes(output).decode("utf-8", "replace")

    def read_file(self, path: str) -> str:
        """A small text file of the container ('' when it has none)."""
        try:
            chunks, _ = self._api.get_archive(self.id, path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
                member = next((m for m in archive.getmembers() if m.isfile()), None)
                handle = archive.extractfile(member) if member is not None else None
                return handle.read().decode("utf-8", "replace") if handle is not None else ""
        except (docker.errors.NotFound, tarfile.TarError):
            return ""
        except docker.errors.DockerException as exc:
            raise _translate(exc, f"cannot read {path} in the build container") from exc

    def upper_dir(self) -> Path | None:
        """Where the container's writes land on the host (overlay2), for the disk watch."""
        attrs = self._call(self._api.inspect_container, self.id, what="cannot inspect")
        upper = ((attrs.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir")
        return Path(upper) if upper else None

    def end(self) -> ContainerEnd:
        attrs = self._call(self._api.inspect_container, self.id, what="cannot inspect")
        state = attrs.get("State") or {}
        running = bool(state.get("Running"))
        code = state.get("ExitCode")
        return ContainerEnd(running, None if running else code, bool(state.get("OOMKilled")))

    def pids_limit_hits(self) -> int | None:
        """How often a process could not start in this container (or its RUN steps) for
        its process limit: the pids cgroup's ``max`` event count, read on this host. None
        where this host does not show the container's cgroup (another cgroup layout, or a
        remote engine)."""
        for path in _pids_events_paths(self.id):
            try:
                text = path.read_text(encoding="ascii")
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "max" and value.strip().isdigit():
                    return int(value)
        return None

    def forks_refused(self) -> bool:
        """Whether the kernel logged that the process limit refused a fork in this
        container (or a RUN step nested in it): still known once the container and its
        cgroup are gone. False where this host's kernel log cannot be read."""
        self._read_kernel_log()
        return self._forks_refused

    def buildkit_forks_refused(self) -> int:
        """How many BuildKit RUN steps (on this engine, any build's) the kernel logged a
        refused fork for since this container was made: BuildKit's steps run in cgroups
        of their own (``/docker/buildkit/<id>``) under the budget all BuildKit builds
        share. 0 where this host's kernel log cannot be read."""
        self._read_kernel_log()
        return self._buildkit_refusals

    def _read_kernel_log(self) -> None:
        if self._kernel_log is None:
            return
        lines = self._kernel_log.lines()
        self._forks_refused = self._forks_refused or fork_rejected_in(lines, self.id)
        self._buildkit_refusals += forks_rejected_in(lines, BUILDKIT_CGROUP)

    def kill(self) -> None:
        try:
            self._api.kill(self.id)
        except docker.errors.APIError:
            return  # not running any more
        except docker.errors.DockerException as exc:
            raise _translate(exc, "cannot stop the build container") from exc

    def remove(self) -> None:
        if not self.id:
            return
        for attempt in range(2):
            try:
                self._api.remove_container(self.id, force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # removal already in progress
                    return
                # A container that stops while the engine kills it for the removal: "Could
                # not kill running container …, cannot remove - Container … is not
                # running" (500). It is stopped now; the second try removes it.
                if attempt == 0 and "is not running" in str(exc.explanation or ""):
                    continue
                raise _translate(exc, "cannot remove the build container") from exc
            except docker.errors.DockerException as exc:
                raise _translate(exc, "cannot remove the build container") from exc
            return

    def close(self) -> None:
        if self._kernel_log is not None:
            self._kernel_log.close()
        self._client.close()

    def remove_leftovers(self, platform_id: str) -> list[str]:
        """Remove the build containers a stopped platform of ``platform_id`` left behind
        (it was killed mid-build); the names removed."""
        filters = {"label": [f"{LABEL_BUILD_PLATFORM}={platform_id}"]}
        found = self._call(self._api.containers, all=True, filters=filters, what="cannot list")
        removed = []
        for summary in found:
            try:
                self._api.remove_container(summary["Id"], force=True, v=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.DockerException as exc:
                raise _translate(exc, "cannot remove a leftover build container") from exc
            removed.append(str((summary.get("Names") or [summary["Id"]])[0]).lstrip("/"))
        return removed

    def _call(self, method: Any, *args: Any, what: str, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except docker.errors.DockerException as exc:
            raise _translate(exc, what) from exc


class Stream:
    """An attached stream: the raw socket to read and write, and what holds it open."""

    def __init__(self, holder: Any) -> None:
        raw = getattr(holder, "_sock", holder)
        if not isinstance(raw, socket.socket):
            raise BuildContainerError("the engine's attach stream is not a socket")
        self.socket = raw
        self._holder = holder

    def close(self) -> None:
        """Close the HTTP response that upgraded to this stream, then the socket."""
        response = getattr(self._holder, "_response", None)
        with contextlib.suppress(OSError, ValueError):
            if response is not None:
                response.close()
        self.socket.close()


def _pids_events_paths(container_id: str) -> list[Path]:
    """Where the pids cgroup of a container is, on cgroup v1 and v2, with the cgroupfs and
    the systemd drivers (build containers set no cgroup parent of their own)."""
    root = Path("/sys/fs/cgroup")
    return [
        root / "pids" / "docker" / container_id / "pids.events",
        root / "pids" / "system.slice" / f"docker-{container_id}.scope" / "pids.events",
        root / "docker" / container_id / "pids.events",
        root / "system.slice" / f"docker-{container_id}.scope" / "pids.events",
    ]


def _translate(exc: docker.errors.DockerException, what: str) -> StackyardError:
    if isinstance(exc, docker.errors.APIError):
        return BuildContainerError(f"{what}: {exc.explanation or exc}")
    return _unreachable(exc)


def _unreachable(exc: Exception) -> ComponentError:
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return ComponentError(
        f"the Docker engine at {where} did not answer: {exc}",
        hint="start it (scripts/setup-host does), or set DOCKER_HOST",
    )
