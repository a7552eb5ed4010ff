"""Platform settings: where state lives and which loopback ports the components use.

One ``Settings`` object is built by the CLI (or a test) and passed down; nothing reads
the environment at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

NetworkMode = Literal["host", "bridge"]
# "auto": bridge where the engine has a bridge network, else host (docs/engines.md).
NetworkSetting = Literal["auto", "host", "bridge"]
DEFAULT_BUILD_IMAGE = "stackyard/build:bookworm"  # what scripts/setup-host builds


def default_build_cpus() -> float:
    """All cores but half of one, at least one: a build leaves room for the tasks."""
    return max(1.0, (os.cpu_count() or 1) - 0.5)


def default_data_dir() -> Path:
    """``$STACKYARD_DATA_DIR``, else ``$XDG_DATA_HOME/stackyard``, else ~/.local/share/stackyard."""
    explicit = os.environ.get("STACKYARD_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "stackyard"


@dataclass(frozen=True)
class Settings:
    """Everything the platform needs to know to start; defaults are the embedded setup."""

    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    api_port: int = 7878
    registry_port: int = 5000
    network_mode: NetworkSetting = "auto"
    engine: str = "docker"  # an entry point name in the stackyard.engines group
    # Where the engine answers (e.g. unix:///run/stackyard-swarm/n1.sock, a swarm manager);
    # None: DOCKER_HOST, else the local engine.
    engine_endpoint: str | None = None
    # The registry address tasks pull from (e.g. registry.internal:5000, which every node of a
    # cluster reaches); None: the embedded registry's own address.
    task_registry: str | None = None
    router: str = "caddy"  # an entry point name in the stackyard.routers group
    source: str = "git"  # an entry point name in the stackyard.sources group
    registry: str = "oci"  # an entry point name in the stackyard.registries group
    http_port: int = 80  # where the router serves stages that have a host name
    https_port: int = 443  # ... and those of them with a certificate
    # The address of those two ports: loopback unless the platform is told to publish.
    public_address: str = "127.0.0.1"
    # ``<stage>.<stack>.<base_domain>`` is each stage's default host name, when set.
    base_domain: str | None = None
    acme_email: str = ""  # the ACME account's contact; with it, stages default to HTTPS
    acme_ca: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_roots: tuple[str, ...] = ()  # PEM files to trust for the ACME CA's own HTTPS
    # The ACME CA's External Account Binding: the key id, and its HMAC key (a secret: kept
    # sealed in the data directory by `up`, unsealed when the router is wired, never shown).
    acme_eab_kid: str = ""
    acme_eab_hmac: str = field(default="", repr=False)
    # A `certificate` notification when a valid certificate is this close to its expiry.
    certificate_warning_days: int = 14
    certificate_check_interval: float = 60.0  # seconds between two looks at certificates
    # Each stage's traffic minute buckets are kept this long; the access logs are read into
    # them every traffic_count_interval seconds (0: only when traffic is read).
    traffic_retention_days: int = 7
    traffic_count_interval: float = 10.0
    # Caddy processes of the data plane, serving the same routes on the same ports, so that
    # one restarting (a crash, an upgrade of Caddy) never leaves a stage without a router.
    router_instances: int = 2
    component_timeout: float = 20.0
    # Wrong tokens from one address (or naming one token) within auth_window seconds,
    # before that address (or token) is refused with 429 until the window has passed.
    auth_failures: int = 5
    auth_window: float = 60.0
    audit_retention_days: int = 365  # audit entries older than this are removed; 0: keep all
    public_url: str | None = None  # the API and console as people reach them (a proxy)
    # The host name the API, console, git remote and webhooks are published on, over HTTPS
    # through the router (``up --public-api``); the API itself stays on loopback.
    public_api: str | None = None
    # Builds and releases: the image their specs run in, and each one's limits.
    build_image: str = DEFAULT_BUILD_IMAGE
    build_cpus: float = field(default_factory=default_build_cpus)
    build_memory: int = 4 * 1024**3  # bytes
    build_pids: int = 2048
    build_disk: int = 10 * 1024**3  # bytes
    builds_on_host: bool = False  # trusted machines only: specs run as the platform's user
    keep_releases: int = 10  # retention keeps the images and logs of the last N per stage
    retention_every: float = 86400.0  # seconds between two scheduled retention runs

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @property
    def default_tls(self) -> Literal["acme", "off"]:
        """How a stage is served when it does not say: HTTPS once the platform has an ACME
        contact or a base domain."""
        return "acme" if self.acme_email or self.base_domain else "off"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def public_api_url(self) -> str | None:
        """``https://<public_api>[:<https_port>]`` when the API is published, else None."""
        if not self.public_api:
            return None
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self.public_api}{port}"

    @property
    def published_url(self) -> str | None:
        """Where people reach the API from elsewhere: ``public_url`` (a proxy of their own),
        else the published name's URL, else None (loopback only)."""
        found = self.public_url or self.public_api_url
        return found.rstrip("/") if found else None

    @property
    def console_url(self) -> str:
        """Where links in notifications point: the published URL, else the API's own URL."""
        return self.published_url or self.api_url.rstrip("/")

    @property
    def registry_endpoint(self) -> str:
        return f"{self.host}:{self.registry_port}"

    @property
    def caddy_admin_sockets(self) -> list[Path]:
        """The admin API of each Caddy: a unix socket, mode 0600, never a TCP port."""
        return [self.run_dir / f"caddy-{n}.sock" for n in range(1, self.router_instances + 1)]

    @property
    def dataplane_socket(self) -> Path:
        """The data plane keeper's control socket (mode 0600): upstreams, registry, status."""
        return self.run_dir / "dataplane.sock"

    @property
    def dataplane_file(self) -> Path:
        """Written by the keeper: its pid, the responder's address, its components' pids."""
        return self.run_dir / "dataplane.json"

    @property
    def upstreams_file(self) -> Path:
        """The responder's table, rewritten on every change: a restart serves the last one."""
        return self.run_dir / "upstreams.json"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'stackyard.db'}"

    @property
    def platform_id_file(self) -> Path:
        return self.data_dir / "platform-id"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def pepper_file(self) -> Path:
        """The key of the tokens' hashes (mode 0600); without it no token works."""
        return self.data_dir / "token-pepper"

    @property
    def state_file(self) -> Path:
        """Written by a running platform: its pid, URLs and child pids (for ``down``)."""
        return self.data_dir / "platform.json"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def remotes_dir(self) -> Path:
        """The git remotes the platform hosts (``<stack>.git``): where pushes land."""
        return self.data_dir / "remotes"

    @property
    def run_dir(self) -> Path:
        """Generated component configs (registry, Caddy) and their working files."""
        return self.data_dir / "run"
