"""Options every command shares (``--data-dir``, ``--json``) and the settings they make."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackyard.errors import UsageError
from stackyard.settings import Settings

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="STACKYARD_DATA_DIR",
        help="Where state, logs and the admin token live \\[default: ~/.local/share/stackyard].",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
# The options of the platform's own settings: `up`, and the service unit that runs it.
ApiPort = Annotated[int | None, typer.Option(help="API port on 127.0.0.1.")]
RegistryPort = Annotated[int | None, typer.Option(help="Registry port on 127.0.0.1.")]
NetworkModeOption = Annotated[
    str | None, typer.Option(help="Task networking: host (default) or bridge.")
]
PublicUrl = Annotated[
    str | None,
    typer.Option(
        help="The URL people reach the API and console at (behind a proxy); "
        "notifications link to it. Default: the API's own URL.",
        envvar="STACKYARD_PUBLIC_URL",
    ),
]
# Host-name routes and their certificates (docs/router.md): `up` and the service unit.
Domain = Annotated[
    str | None,
    typer.Option(
        help="Base domain: each stage is served on https://<stage>.<stack>.<domain> "
        "(point a wildcard DNS record at this machine)."
    ),
]
AcmeEmail = Annotated[
    str | None,
    typer.Option(help="Contact of the ACME account; stages are then served over HTTPS."),
]
AcmeCa = Annotated[str | None, typer.Option(help="ACME directory URL \\[default: Let's Encrypt].")]
AcmeCaRoots = Annotated[
    list[Path] | None,
    typer.Option(help="PEM file to trust for the ACME CA's own HTTPS (a private CA)."),
]
PublicAddress = Annotated[
    str | None,
    typer.Option(
        help="Address the host-name routes listen on (ports 80 and 443), e.g. 0.0.0.0 to "
        "serve a real domain \\[default: 127.0.0.1]."
    ),
]
HttpPort = Annotated[
    int | None, typer.Option(help="Port of host-name routes over HTTP \\[default: 80].")
]
HttpsPort = Annotated[
    int | None, typer.Option(help="Port of host-name routes over HTTPS \\[default: 443].")
]


def domain_overrides(
    domain: str | None,
    acme_email: str | None,
    acme_ca: str | None,
    acme_ca_roots: list[Path] | None,
    public_address: str | None,
    http_port: int | None,
    https_port: int | None,
) -> dict[str, object]:
    """The settings of the domain options (None: the default), for ``with_overrides``."""
    return {
        "base_domain": domain,
        "acme_email": acme_email,
        "acme_ca": acme_ca,
        "acme_roots": tuple(str(p.resolve()) for p in acme_ca_roots) if acme_ca_roots else None,
        "public_address": public_address,
        "http_port": http_port,
        "https_port": https_port,
    }


def settings_for(data_dir: Path | None, **overrides: object) -> Settings:
    return Settings().with_overrides(data_dir=data_dir, **overrides)


def platform_settings(
    data_dir: Path | None,
    api_port: int | None,
    registry_port: int | None,
    network_mode: str | None,
    public_url: str | None = None,
) -> Settings:
    """The settings `up` runs with, from its options; a bad network mode or public URL is a
    UsageError."""
    if network_mode not in (None, "host", "bridge"):
        raise UsageError(f"--network-mode: '{network_mode}' is not host or bridge")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise UsageError(f"--public-url: '{public_url}' is not an http(s) URL")
    return settings_for(
        data_dir,
        api_port=api_port,
        registry_port=registry_port,
        network_mode=network_mode,
        public_url=public_url,
    )
