"""Options every command shares (``--data-dir``, ``--json``) and the settings they make.

The platform's own settings are one list of options (:func:`platform_options`): `up` and
the service unit that runs it take the same ones, and a new option is added once.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.core import Command, Context  # Typer's own copy of click
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

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


class StackFirstGroup(TyperGroup):
    """A group whose commands take a stack: a stack given where the command goes
    (`stackyard secrets hello`) is answered with the command that shows it, not only
    "No such command 'hello'"."""

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except ClickUsageError as exc:
            shown = self._showing()
            if args and shown and "Did you mean" not in exc.message:
                exc.message = (
                    f"{exc.message.rstrip('.')}. If {args[0]} is a stack: "
                    f"{ctx.command_path} {shown} {args[0]}"
                )
            raise

    def _showing(self) -> str | None:
        """The command that takes the stack as its argument: ``list``, else ``show``."""
        for name in ("list", "show"):
            command = self.commands.get(name)
            if command is not None and any(p.param_type_name == "argument" for p in command.params):
                return name
        return None


# The options of the platform's own settings: `up`, and the service unit that runs it.
ApiPort = Annotated[int | None, typer.Option(help="API port on 127.0.0.1.")]
RegistryPort = Annotated[int | None, typer.Option(help="Registry port on 127.0.0.1.")]
NetworkModeOption = Annotated[
    str | None,
    typer.Option(
        help="Task and build networking: auto (bridge where the engine has a bridge "
        "network, else host; the default), host or bridge."
    ),
]
Yes = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask; needed when not at a terminal.")
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
    typer.Option(
        help="Contact of the ACME account (the CA mails certificate problems there); with it, "
        "or with --domain, stages are served over HTTPS with ACME certificates unless "
        "stackyard.yml says `tls: off` or `internal`."
    ),
]
AcmeCa = Annotated[str | None, typer.Option(help="ACME directory URL \\[default: Let's Encrypt].")]
AcmeCaRoots = Annotated[
    list[Path] | None,
    typer.Option(help="PEM file to trust for the ACME CA's own HTTPS (a private CA)."),
]
AcmeEabKid = Annotated[
    str | None,
    typer.Option(help="Key id of the ACME CA's External Account Binding (ZeroSSL, Google, …)."),
]
AcmeEabHmac = Annotated[
    str | None,
    typer.Option(
        envvar="STACKYARD_ACME_EAB_HMAC",  # platform/acme.py EAB_HMAC_ENV
        show_envvar=True,
        help="HMAC key of the External Account Binding; `-` reads it from stdin. A secret: "
        "kept sealed in the data directory, never shown, masked in logs; prefer stdin or "
        "the environment variable to the command line.",
    ),
]
PublicAddress = Annotated[
    str | None,
    typer.Option(
        help="Address the host-name routes listen on (ports 80 and 443), e.g. 0.0.0.0 to "
        "serve a real domain \\[default: 127.0.0.1]."
    ),
]
PublicApi = Annotated[
    str | None,
    typer.Option(
        help="Publish the console, API, git remote and webhooks over HTTPS on this host "
        "name through the router (the API stays on 127.0.0.1): a full name, or one label "
        "such as 'stackyard' for stackyard.<domain>. Needs --domain.",
        metavar="NAME",
    ),
]
HttpPort = Annotated[
    int | None, typer.Option(help="Port of host-name routes over HTTP \\[default: 80].")
]
HttpsPort = Annotated[
    int | None, typer.Option(help="Port of host-name routes over HTTPS \\[default: 443].")
]
CertificateWarningDays = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Notify (event `certificate`) when a certificate is this many days from its "
        "expiry \\[default: 14].",
    ),
]
CertificateCheckInterval = Annotated[
    float | None,
    typer.Option(
        min=0.1, help="Seconds between two looks at the certificates' state \\[default: 60]."
    ),
]
TrafficRetentionDays = Annotated[
    int | None,
    typer.Option(
        min=7,
        help="Days each stage's traffic figures (minute buckets) are kept \\[default: 7].",
    ),
]


BuildImage = Annotated[
    str | None,
    typer.Option(
        help="Image build and release specs run in \\[default: stackyard/build:bookworm]."
    ),
]
BuildCpus = Annotated[
    float | None, typer.Option(help="Cores one build may use \\[default: all but half a core].")
]
BuildMemory = Annotated[
    str | None, typer.Option(help="Memory one build may use, such as 4g \\[default: 4g].")
]
BuildPids = Annotated[
    int | None, typer.Option(help="Processes one build may run \\[default: 2048].")
]
BuildDisk = Annotated[
    str | None, typer.Option(help="Disk one build may fill, such as 10g \\[default: 10g].")
]
BuildsOnHost = Annotated[
    bool,
    typer.Option(
        "--builds-on-host",
        help="Run build and release specs as processes of this machine, as the "
        "platform's user, not in build containers. Only where every pusher is trusted.",
    ),
]

KeepReleases = Annotated[
    int | None,
    typer.Option(
        help="Retention keeps the images and logs of the last N releases per stage \\[default: 10]."
    ),
]
RetentionInterval = Annotated[
    float | None,
    typer.Option(
        help="Hours between two scheduled retention runs; 0 turns the schedule off "
        "(`stackyard prune` still runs it) \\[default: 24]."
    ),
]


Engine = Annotated[
    str | None,
    typer.Option(help="Where tasks run: docker (this machine, default) or swarm (a cluster)."),
]
EngineEndpoint = Annotated[
    str | None,
    typer.Option(
        help="The engine's API, e.g. unix:///run/stackyard-swarm/n1.sock (a swarm "
        "manager) \\[default: DOCKER_HOST, else the local engine]."
    ),
]
TaskRegistry = Annotated[
    str | None,
    typer.Option(
        help="Registry address tasks pull from, one every node reaches "
        "\\[default: the embedded registry's 127.0.0.1 address]."
    ),
]

# (name, annotation, default) of every option of the platform's settings, in help order.
_PLATFORM_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("data_dir", DataDir, None),
    ("api_port", ApiPort, None),
    ("registry_port", RegistryPort, None),
    ("network_mode", NetworkModeOption, None),
    ("engine", Engine, None),
    ("engine_endpoint", EngineEndpoint, None),
    ("task_registry", TaskRegistry, None),
    ("public_url", PublicUrl, None),
    ("domain", Domain, None),
    ("acme_email", AcmeEmail, None),
    ("acme_ca", AcmeCa, None),
    ("acme_ca_roots", AcmeCaRoots, None),
    ("acme_eab_kid", AcmeEabKid, None),
    ("acme_eab_hmac", AcmeEabHmac, None),
    ("public_address", PublicAddress, None),
    ("public_api", PublicApi, None),
    ("http_port", HttpPort, None),
    ("https_port", HttpsPort, None),
    ("certificate_warning_days", CertificateWarningDays, None),
    ("certificate_check_interval", CertificateCheckInterval, None),
    ("traffic_retention_days", TrafficRetentionDays, None),
    ("build_image", BuildImage, None),
    ("build_cpus", BuildCpus, None),
    ("build_memory", BuildMemory, None),
    ("build_pids", BuildPids, None),
    ("build_disk", BuildDisk, None),
    ("builds_on_host", BuildsOnHost, False),
    ("keep_releases", KeepReleases, None),
    ("retention_interval", RetentionInterval, None),
)


def platform_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` every option of the platform's settings, after its own; it receives
    them checked, as its ``settings`` parameter (a bad value is a UsageError)."""
    own = [
        parameter
        for parameter in inspect.signature(command, eval_str=True).parameters.values()
        if parameter.name != "settings"
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, kind, default in _PLATFORM_OPTIONS
    ]
    names = [name for name, _, _ in _PLATFORM_OPTIONS]

    @functools.wraps(command)
    def run(**arguments: Any) -> None:
        options = {name: arguments.pop(name) for name in names}
        command(settings=platform_settings(**options), **arguments)

    parameters = [
        parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in own
    ] + added
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return run


def settings_of_command_line(args: Sequence[str]) -> Settings:
    """The settings a ``stackyard up`` command line asks for (a running control plane's,
    after ``up``), read with the very options `up` takes: how `upgrade` keeps them."""
    import typer.exceptions
    import typer.main

    found: list[Settings] = []

    @platform_options
    def read(
        settings: Settings,
        detach: Annotated[bool, typer.Option("-d", "--detach")] = False,
        json_output: Json = False,
    ) -> None:
        found.append(settings)

    reader = typer.Typer(add_completion=False)
    reader.command()(read)
    try:
        typer.main.get_command(reader).main(list(args), prog_name="up", standalone_mode=False)
    except typer.exceptions.TyperException as exc:  # typer's own click: a bad option
        raise UsageError(
            f"cannot read the control plane's command line (up {' '.join(args)}): {exc}",
            hint="stop it with `stackyard down` and start it with this version's `up`",
        ) from exc
    return found[0]


def keep_eab_hmac(settings: Settings) -> Settings:
    """Seal the External Account Binding's HMAC key the options gave (``-``: read it from
    stdin) into the data directory, and return the settings without it; a key id needs a
    key, given now or before (a UsageError)."""
    from dataclasses import replace

    from stackyard.platform.acme import seal_eab_hmac, with_eab_hmac

    given, settings = settings.acme_eab_hmac, replace(settings, acme_eab_hmac="")
    if given:
        if not settings.acme_eab_kid:
            raise UsageError(
                "--acme-eab-hmac needs --acme-eab-kid",
                hint="give both, as the CA shows them for your account",
            )
        seal_eab_hmac(settings, sys.stdin.readline() if given == "-" else given)
    with_eab_hmac(settings)  # a UsageError when a key id has no HMAC key
    return settings


def settings_for(data_dir: Path | None, **overrides: object) -> Settings:
    return Settings().with_overrides(data_dir=data_dir, **overrides)


def platform_settings(
    data_dir: Path | None,
    api_port: int | None,
    registry_port: int | None,
    network_mode: str | None,
    public_url: str | None = None,
    *,
    build_image: str | None = None,
    build_cpus: float | None = None,
    build_memory: str | None = None,
    build_pids: int | None = None,
    build_disk: str | None = None,
    builds_on_host: bool = False,
    keep_releases: int | None = None,
    retention_interval: float | None = None,
    engine: str | None = None,
    engine_endpoint: str | None = None,
    task_registry: str | None = None,
    domain: str | None = None,
    acme_email: str | None = None,
    acme_ca: str | None = None,
    acme_ca_roots: list[Path] | None = None,
    acme_eab_kid: str | None = None,
    acme_eab_hmac: str | None = None,
    public_address: str | None = None,
    http_port: int | None = None,
    https_port: int | None = None,
    public_api: str | None = None,
    certificate_warning_days: int | None = None,
    certificate_check_interval: float | None = None,
    traffic_retention_days: int | None = None,
) -> Settings:
    """The settings `up` runs with, from its options; a bad network mode, public URL,
    build limit or retention setting is a UsageError."""
    from stackyard.config.values import memory_bytes

    if network_mode not in (None, "auto", "host", "bridge"):
        raise UsageError(f"--network-mode: '{network_mode}' is not auto, host or bridge")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise UsageError(f"--public-url: '{public_url}' is not an http(s) URL")
    published = public_api_name(public_api, domain)
    try:
        memory = memory_bytes(build_memory) if build_memory else None
        disk = memory_bytes(build_disk) if build_disk else None
    except ValueError as exc:
        raise UsageError(f"--build-memory / --build-disk: {exc}") from None
    if build_cpus is not None and build_cpus <= 0:
        raise UsageError("--build-cpus must be more than 0, such as 1.5")
    if build_pids is not None and build_pids < 64:
        raise UsageError("--build-pids must be 64 or more: a shell and docker need a few")
    if keep_releases is not None and keep_releases < 1:
        raise UsageError("--keep-releases must be 1 or more: a stage's running release is kept")
    if retention_interval is not None and retention_interval < 0:
        raise UsageError("--retention-interval must be 0 (no schedule) or a number of hours")
    return settings_for(
        data_dir,
        api_port=api_port,
        registry_port=registry_port,
        network_mode=network_mode,
        public_url=public_url,
        build_image=build_image,
        build_cpus=build_cpus,
        build_memory=memory,
        build_pids=build_pids,
        build_disk=disk,
        builds_on_host=builds_on_host or None,
        keep_releases=keep_releases,
        retention_every=None if retention_interval is None else retention_interval * 3600,
        engine=engine,
        engine_endpoint=engine_endpoint,
        task_registry=task_registry,
        base_domain=domain,
        acme_email=acme_email,
        acme_ca=acme_ca,
        acme_roots=tuple(str(p.resolve()) for p in acme_ca_roots) if acme_ca_roots else None,
        acme_eab_kid=acme_eab_kid,
        acme_eab_hmac=acme_eab_hmac,  # sealed by keep_eab_hmac before anything runs
        public_address=public_address,
        http_port=http_port,
        https_port=https_port,
        public_api=published,
        certificate_warning_days=certificate_warning_days,
        certificate_check_interval=certificate_check_interval,
        traffic_retention_days=traffic_retention_days,
    )


def public_api_name(public_api: str | None, domain: str | None) -> str | None:
    """The host name ``--public-api`` asks for: a single label is one under ``--domain``;
    a UsageError without ``--domain`` or for a name that is not a host name."""
    from stackyard.router.base import Route

    if public_api is None:
        return None
    if not domain:
        raise UsageError(
            f"--public-api {public_api} needs --domain",
            hint="the API is published over HTTPS with a certificate for a name under the "
            "base domain: add --domain D (and point its DNS at this machine)",
        )
    name = public_api.strip().lower().rstrip(".")
    name = name if "." in name else f"{name}.{domain}"
    try:
        Route("stackyard.api", host=name).check()
    except UsageError:
        raise UsageError(
            f"--public-api: '{public_api}' is not a host name",
            hint="give one label such as 'stackyard' (for stackyard.<domain>) or a full name",
        ) from None
    return name


def confirm_removal(question: str, consequence: str, command: str) -> None:
    """A removal the user confirms: at a terminal, ``question`` (no: abort); without one,
    a UsageError saying ``consequence`` and that ``command --yes`` confirms it. A script
    must say --yes (as `stacks delete` does), never remove on its own."""
    _need_terminal(consequence, command)
    typer.confirm(question, abort=True)


def confirm_by_name(
    name: str, question: str, consequence: str, command: str, *, verb: str = "removed"
) -> None:
    """A removal that cannot be undone: at a terminal, ``question`` and the user types
    ``name`` (anything else: a UsageError, "nothing was ``verb``"); without one, as
    ``confirm_removal``."""
    _need_terminal(consequence, command)
    typed = typer.prompt(f"{question}\nType its name to confirm").strip()
    if typed != name:
        raise UsageError(f"'{typed}' is not '{name}': nothing was {verb}")


def _need_terminal(consequence: str, command: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(
            f"{consequence}, and there is no terminal to confirm at",
            hint=f"confirm with: {command} --yes",
        )
