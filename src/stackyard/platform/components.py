"""The embedded components `stackyard up` runs: the OCI registry and Caddy.

``plan_*`` functions decide what to run and return a ``ComponentSpec`` (argv, files to
write, how to tell it is ready). ``ProcessSupervisor`` in supervisor.py runs the specs.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from stackyard.platform.credentials import ensure_registry_login, write_htpasswd
from stackyard.registry_login import RegistryLogin
from stackyard.settings import Settings

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


def registry_config(settings: Settings, root: Path) -> str:
    """The CNCF distribution config: loopback only, htpasswd auth, deletes allowed."""
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": f"{settings.host}:{settings.registry_port}",
            # A fixed secret per data dir would be nicer for multi-node; one node is fine.
            "secret": secrets.token_hex(16),
        },
        "auth": {"htpasswd": {"realm": "stackyard", "path": str(root / "htpasswd")}},
    }
    return json.dumps(config, indent=2)  # JSON is valid YAML


def caddy_config(settings: Settings) -> str:
    """Caddy's start config: the admin API on loopback, no servers until stages need them."""
    config = {
        "admin": {"listen": f"{settings.host}:{settings.caddy_admin_port}"},
        "apps": {"http": {"servers": {}}},
        "storage": {"module": "file_system", "root": str(settings.run_dir / "caddy" / "storage")},
    }
    return json.dumps(config, indent=2)


def plan_registry(settings: Settings, *, binary: str | None) -> ComponentSpec:
    """Debian's ``docker-registry`` when installed, else the official ``registry:2`` image."""
    root = settings.data_dir / "registry"
    config_path = settings.run_dir / "registry.yml"
    credentials = registry_login(settings)
    htpasswd = root / "htpasswd"
    if not htpasswd.exists():
        write_htpasswd(htpasswd, credentials)
    spec = ComponentSpec(
        name="registry",
        argv=(binary or "docker-registry", "serve", str(config_path)),
        ready_url=f"http://{settings.registry_endpoint}/v2/",
        ready_statuses=frozenset({200, 401}),
        log_file=settings.logs_dir / "registry.log",
        install_hint="install it with: apt-get install docker-registry (or run scripts/setup-host)",
        files={config_path: registry_config(settings, root)},
    )
    if binary is not None:
        return spec
    name = f"stackyard-registry-{settings.registry_port}"
    mounts = ("-v", f"{root}:{root}", "-v", f"{config_path}:/etc/docker/registry/config.yml:ro")
    return replace(spec, argv=(*_docker_run(name), *mounts, REGISTRY_IMAGE), container_name=name)


def plan_caddy(settings: Settings, *, binary: str | None) -> ComponentSpec:
    """Debian's ``caddy`` when installed, else the official ``caddy:2`` image."""
    config_path = settings.run_dir / "caddy.json"
    spec = ComponentSpec(
        name="caddy",
        argv=(binary or "caddy", "run", "--config", str(config_path)),
        ready_url=f"{settings.caddy_admin_url}/config/",
        ready_statuses=frozenset({200}),
        log_file=settings.logs_dir / "caddy.log",
        install_hint="install it with: apt-get install caddy (or run scripts/setup-host)",
        files={config_path: caddy_config(settings)},
        # Caddy keeps its own state under XDG dirs; keep it inside the data dir.
        env={
            "XDG_DATA_HOME": str(settings.run_dir / "caddy" / "data"),
            "XDG_CONFIG_HOME": str(settings.run_dir / "caddy" / "config"),
        },
    )
    if binary is not None:
        return spec
    name = f"stackyard-caddy-{settings.caddy_admin_port}"
    mount = ("-v", f"{config_path}:/etc/caddy/caddy.json:ro")
    command = ("caddy", "run", "--config", "/etc/caddy/caddy.json")
    argv = (*_docker_run(name), *mount, CADDY_IMAGE, *command)
    return replace(spec, argv=argv, container_name=name)


def _docker_run(name: str) -> tuple[str, ...]:
    # Host networking, so the component binds loopback exactly as the binary would.
    return ("docker", "run", "--rm", "--init", "--name", name, "--network", "host")


def plan_components(settings: Settings) -> list[ComponentSpec]:
    """The components to start, each from its binary when installed."""
    return [
        plan_registry(settings, binary=shutil.which("docker-registry")),
        plan_caddy(settings, binary=shutil.which("caddy")),
    ]


def registry_login(settings: Settings) -> RegistryLogin:
    """The login of the managed registry (its credentials file is made on first use)."""
    return ensure_registry_login(
        settings.data_dir / "registry-credentials.json", settings.registry_endpoint
    )
