"""The data plane's components: the OCI registry and the Caddy processes.

``plan_*`` functions decide what to run and return a ``ComponentSpec`` (argv, files to
write, how to tell it is ready). The keeper (keeper.py) runs the specs through the
``spawn``, ``wait_ready`` and ``stop`` of supervisor.py, detached from the control plane.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from stackyard.platform.credentials import (
    ensure_registry_login,
    has_ecr_username,
    write_htpasswd,
)
from stackyard.registry_login import RegistryLogin
from stackyard.router.caddy import ADMIN_HOST
from stackyard.settings import Settings

# What the registry accepts: everything, pulls only (pushes refused: the garbage
# collector may run), or nothing (it is stopped).
RegistryMode = Literal["read-write", "read-only", "stopped"]
REGISTRY_MODES: tuple[RegistryMode, ...] = ("read-write", "read-only", "stopped")

REGISTRY_IMAGE = "registry:2"
CADDY_IMAGE = "caddy:2"


@dataclass(frozen=True)
class ComponentSpec:
    """How to run one component and how to know it is up."""

    name: str
    argv: tuple[str, ...]
    ready_url: str
    ready_statuses: frozenset[int]
    log_file: Path
    install_hint: str
    files: dict[Path, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    container_name: str | None = None  # set when the component runs as an official image
    ready_socket: Path | None = None  # ready_url is asked over this unix socket
    port: int | None = None  # the loopback TCP port it binds itself (checked before start)
    mode: str = ""  # a variant of the component (the registry's RegistryMode)


def registry_config(settings: Settings, root: Path, *, read_only: bool = False) -> str:
    """The CNCF distribution config: loopback only, htpasswd auth, deletes allowed;
    with ``read_only``, pulls only (the mode for its garbage collection)."""
    storage: dict[str, object] = {
        "filesystem": {"rootdirectory": str(root / "data")},
        "delete": {"enabled": True},
    }
    if read_only:
        storage["maintenance"] = {"readonly": {"enabled": True}}
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": storage,
        "http": {
            "addr": f"{settings.host}:{settings.registry_port}",
            # A fixed secret per data dir would be nicer for multi-node; one node is fine.
            "secret": secrets.token_hex(16),
        },
        "auth": {"htpasswd": {"realm": "stackyard", "path": str(root / "htpasswd")}},
    }
    return json.dumps(config, indent=2)  # JSON is valid YAML


def caddy_admin_listen(socket_path: Path) -> str:
    return f"unix/{socket_path}"


def caddy_config(settings: Settings, admin_socket: Path) -> str:
    """Caddy's start config: the admin API on a unix socket only (reachable by its owner,
    not by a task on the host's network), no servers until stages need them. Certificates
    live in one storage that every Caddy of the data plane shares."""
    config = {
        "admin": {"listen": caddy_admin_listen(admin_socket), "origins": [ADMIN_HOST]},
        "apps": {"http": {"servers": {}}},
        "storage": {"module": "file_system", "root": str(settings.run_dir / "caddy" / "storage")},
    }
    return json.dumps(config, indent=2)


def plan_registry(
    settings: Settings, *, binary: str | None, mode: RegistryMode = "read-write"
) -> ComponentSpec:
    """Debian's ``docker-registry`` when installed, else the official ``registry:2`` image."""
    root = settings.data_dir / "registry"
    config_path = settings.run_dir / "registry.yml"
    credentials = registry_login(settings)
    htpasswd = root / "htpasswd"
    if not has_ecr_username(htpasswd):  # none yet, or one from before the AWS entry
        write_htpasswd(htpasswd, credentials)
    config = registry_config(settings, root, read_only=mode == "read-only")
    spec = ComponentSpec(
        name="registry",
        argv=(binary or "docker-registry", "serve", str(config_path)),
        ready_url=f"http://{settings.registry_endpoint}/v2/",
        ready_statuses=frozenset({200, 401}),
        log_file=settings.logs_dir / "registry.log",
        install_hint="install it with: apt-get install docker-registry (or run scripts/setup-host)",
        files={config_path: config},
        port=settings.registry_port,
        mode=mode,
    )
    if binary is not None:
        return spec
    name = f"stackyard-registry-{settings.registry_port}"
    mounts = ("-v", f"{root}:{root}", "-v", f"{config_path}:/etc/docker/registry/config.yml:ro")
    return replace(spec, argv=(*_docker_run(name), *mounts, REGISTRY_IMAGE), container_name=name)


def plan_registry_gc(settings: Settings, *, binary: str | None) -> ComponentSpec:
    """``garbage-collect``: removes the blobs no manifest references. Run it only while the
    serving registry is read-only (a push in between could lose its blobs). Its config is a
    file of its own, without the read-only switch."""
    root = settings.data_dir / "registry"
    config_path = settings.run_dir / "registry-gc.yml"
    serve = plan_registry(settings, binary=binary)
    if binary is not None:
        argv: tuple[str, ...] = (binary, "garbage-collect", str(config_path))
    else:
        mounts = ("-v", f"{root}:{root}", "-v", f"{config_path}:{config_path}:ro")
        argv = ("docker", "run", "--rm", *mounts, REGISTRY_IMAGE, "garbage-collect",
                str(config_path))  # fmt: skip
    return replace(
        serve,
        name="registry garbage collection",
        argv=argv,
        files={config_path: registry_config(settings, root)},
        container_name=None,
        port=None,
    )


def caddy_home(settings: Settings, instance: int) -> Path:
    """Where Caddy ``instance`` keeps its own state (XDG dirs), its autosaved config too."""
    return settings.run_dir / f"caddy-{instance}"


def caddy_autosave(settings: Settings, instance: int) -> Path:
    """The config Caddy writes after every admin change and resumes from (``--resume``)."""
    return caddy_home(settings, instance) / "config" / "caddy" / "autosave.json"


def plan_caddy(settings: Settings, instance: int, *, binary: str | None) -> ComponentSpec:
    """Caddy ``instance`` (1, 2, ...): Debian's ``caddy`` when installed, else the official
    ``caddy:2`` image. ``--resume``: a restarted Caddy serves every route it had."""
    config_path = settings.run_dir / f"caddy-{instance}.json"
    admin_socket = settings.caddy_admin_sockets[instance - 1]
    home = caddy_home(settings, instance)
    command = ("run", "--config", str(config_path), "--resume")
    # Caddy keeps its own state under XDG dirs; keep it inside the data dir.
    env = {"XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config")}
    spec = ComponentSpec(
        name=f"caddy-{instance}",
        argv=(binary or "caddy", *command),
        ready_url=f"http://{ADMIN_HOST}/config/",
        ready_statuses=frozenset({200}),
        log_file=settings.logs_dir / f"caddy-{instance}.log",
        install_hint="install it with: apt-get install caddy (or run scripts/setup-host)",
        files={config_path: caddy_config(settings, admin_socket)},
        env=env,
        ready_socket=admin_socket,
    )
    if binary is not None:
        return spec
    digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:10]
    name = f"stackyard-caddy-{instance}-{digest}"
    # The run directory at the same path inside: the admin socket, configs and state.
    mount = ("-v", f"{settings.run_dir}:{settings.run_dir}")
    variables = tuple(arg for key, value in env.items() for arg in ("-e", f"{key}={value}"))
    argv = (*_docker_run(name), *mount, *variables, CADDY_IMAGE, "caddy", *command)
    return replace(spec, argv=argv, container_name=name)


def _docker_run(name: str) -> tuple[str, ...]:
    # Host networking, so the component binds loopback exactly as the binary would.
    return ("docker", "run", "--rm", "--init", "--name", name, "--network", "host")


def plan_components(
    settings: Settings, *, registry_mode: RegistryMode = "read-write"
) -> list[ComponentSpec]:
    """The data plane's components, each from its binary when installed: the registry
    (none while it is ``stopped``) and every Caddy."""
    registry = plan_registry(settings, binary=shutil.which("docker-registry"), mode=registry_mode)
    caddies = [
        plan_caddy(settings, n, binary=shutil.which("caddy"))
        for n in range(1, settings.router_instances + 1)
    ]
    return caddies if registry_mode == "stopped" else [registry, *caddies]


def registry_login(settings: Settings) -> RegistryLogin:
    """The login of the managed registry (its credentials file is made on first use)."""
    return ensure_registry_login(
        settings.data_dir / "registry-credentials.json", settings.registry_endpoint
    )
