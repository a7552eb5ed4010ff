"""`stackyard service install | status | uninstall`: the platform as a systemd service.

The unit runs the control plane in the foreground (`stackyard up`, the same command a
terminal runs) with ``Restart=on-failure``: killed or crashed, it is started again and
adopts the data plane, which never stopped. ``KillMode=process`` makes a stop or a
restart of the unit signal the control plane only, so the apps keep serving through it.
Enabled for ``multi-user.target`` (or the user manager's ``default.target``), it starts
at boot; the tasks then come back through the control plane's adoption (a task that did
not survive the reboot is replaced, as any failed task is).

``plan_install`` and ``plan_uninstall`` decide (files, links, commands as plain data);
``apply`` does it. Enabling is the ``<target>.wants/`` link that ``systemctl enable``
makes, so a machine whose systemd does not run (a container, a chroot) still gets a unit
that starts at the next boot.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stackyard.errors import ComponentError
from stackyard.platform.lifecycle import foreground_argv
from stackyard.settings import Settings

Scope = Literal["system", "user"]
DEFAULT_NAME = "stackyard"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def default_scope() -> Scope:
    return "system" if os.geteuid() == 0 else "user"


def default_unit_dir(scope: Scope) -> Path:
    if scope == "system":
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config).expanduser() if config else Path.home() / ".config"
    return base / "systemd" / "user"


def systemd_running() -> bool:
    """True when systemd is the service manager here (sd_booted's test)."""
    return Path("/run/systemd/system").is_dir()


def target_of(scope: Scope) -> str:
    return "multi-user.target" if scope == "system" else "default.target"


def unit_text(settings: Settings, *, scope: Scope) -> str:
    """The unit file: the control plane in the foreground, restarted on failure."""
    command = shlex.join(foreground_argv(settings))
    return f"""\
# Written by `stackyard service install`; `stackyard service uninstall` removes it.
[Unit]
Description=Stackyard push-to-deploy platform ({settings.data_dir})
Wants=network-online.target docker.service
After=network-online.target docker.service

[Service]
Type=simple
ExecStart={command}
Environment=STACKYARD_DATA_DIR={settings.data_dir}
# Killed or crashed: started again; it adopts the data plane, which kept serving.
Restart=on-failure
RestartSec=2
# A stop or restart signals the control plane only: the data plane (keeper, registry,
# Caddy) keeps serving the apps. `stackyard down --all` stops it.
KillMode=process
TimeoutStopSec=60
UMask=0077

[Install]
WantedBy={target_of(scope)}
"""


@dataclass(frozen=True)
class ServicePlan:
    """What installing or removing the unit changes, as plain data."""

    unit: Path
    first: tuple[tuple[str, ...], ...] = ()  # commands before the files change
    write: dict[Path, str] = field(default_factory=dict)  # file -> content
    link: dict[Path, Path] = field(default_factory=dict)  # symlink -> what it points to
    remove: tuple[Path, ...] = ()
    then: tuple[tuple[str, ...], ...] = ()  # commands after; each must succeed
    notes: tuple[str, ...] = ()


def _systemctl(scope: Scope, *args: str) -> tuple[str, ...]:
    return ("systemctl", *(("--user",) if scope == "user" else ()), *args)


def plan_install(
    settings: Settings,
    *,
    scope: Scope,
    unit_dir: Path,
    name: str = DEFAULT_NAME,
    running: bool,
) -> ServicePlan:
    """Write and enable the unit; with systemd running, load it and start it."""
    unit = unit_dir / f"{name}.service"
    wants = unit_dir / f"{target_of(scope)}.wants" / unit.name
    commands: tuple[tuple[str, ...], ...] = ()
    notes = [f"wrote {unit}", f"enabled it ({wants.parent.name}): it starts at boot"]
    if running:
        commands = (_systemctl(scope, "daemon-reload"), _systemctl(scope, "start", unit.name))
        notes.append(f"started {unit.name}; `stackyard service status` shows it")
    else:
        notes.append(
            "systemd is not running here: the unit starts at the next boot; start the "
            "platform now with `stackyard up -d`"
        )
    if scope == "user":
        notes.append("for a start at boot without a login: loginctl enable-linger $USER")
    return ServicePlan(
        unit=unit,
        write={unit: unit_text(settings, scope=scope)},
        link={wants: Path("..") / unit.name},
        then=commands,
        notes=tuple(notes),
    )


def plan_uninstall(
    *, scope: Scope, unit_dir: Path, name: str = DEFAULT_NAME, running: bool
) -> ServicePlan:
    """Stop the unit (the control plane; the data plane keeps serving), disable it,
    remove it."""
    unit = unit_dir / f"{name}.service"
    wants = unit_dir / f"{target_of(scope)}.wants" / unit.name
    return ServicePlan(
        unit=unit,
        first=(_systemctl(scope, "stop", unit.name),) if running else (),
        remove=(wants, unit),
        then=(_systemctl(scope, "daemon-reload"),) if running else (),
        notes=(
            f"removed {unit}",
            "the data plane keeps serving the apps; `stackyard down --all` stops it",
        ),
    )


def apply(plan: ServicePlan) -> None:
    """Carry out ``plan``: its first commands, files, links, removals, then the other
    commands. A command that fails raises ComponentError with its output."""
    for command in plan.first:
        _run(command)
    for path, content in plan.write.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(path)
    for link, target in plan.link.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    for path in plan.remove:
        path.unlink(missing_ok=True)
    for command in plan.then:
        _run(command)


def _run(command: tuple[str, ...]) -> None:
    if shutil.which(command[0]) is None:
        raise ComponentError(f"`{command[0]}` is not installed", hint="install systemd")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise ComponentError(
            f"`{shlex.join(command)}` failed (status {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}",
            hint="see `journalctl -u stackyard` (or `journalctl --user -u stackyard`)",
        )


def service_status(
    *, scope: Scope, unit_dir: Path, name: str = DEFAULT_NAME, running: bool
) -> dict[str, Any]:
    """The unit as files and, with systemd running, as systemd sees it."""
    unit = unit_dir / f"{name}.service"
    wants = unit_dir / f"{target_of(scope)}.wants" / unit.name
    found: dict[str, Any] = {
        "unit": str(unit),
        "installed": unit.exists(),
        "enabled": wants.is_symlink(),
        "systemd_running": running,
        "exec_start": _exec_start(unit) if unit.exists() else None,
    }
    if running and unit.exists():
        properties = "ActiveState,SubState,MainPID,NRestarts,ExecMainStartTimestamp"
        shown = subprocess.run(
            _systemctl(scope, "show", unit.name, f"--property={properties}"),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        for line in shown.stdout.splitlines():
            key, _, value = line.partition("=")
            found[key] = value
    return found


def _exec_start(unit: Path) -> str | None:
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("ExecStart="):
            return line.removeprefix("ExecStart=")
    return None
