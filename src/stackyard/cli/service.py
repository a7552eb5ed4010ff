"""``stackyard service``: install, show and remove the systemd unit that runs the platform."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stackyard.cli.output import console, print_json
from stackyard.cli.shared import DataDir, Json, keep_eab_hmac, platform_options, settings_for
from stackyard.errors import UsageError
from stackyard.settings import Settings

if TYPE_CHECKING:
    from stackyard.platform.service import Scope

app = typer.Typer(
    help="Run the platform as a systemd service: started at boot, restarted on failure.",
    no_args_is_help=True,
)

UserScope = Annotated[
    bool | None,
    typer.Option(
        "--user/--system",
        help="The user's systemd instead of the system's \\[default: --system as root].",
    ),
]
UnitDir = Annotated[
    Path | None,
    typer.Option(
        help="Where the unit file goes \\[default: /etc/systemd/system, or "
        "~/.config/systemd/user with --user]."
    ),
]
Name = Annotated[str, typer.Option(help="The unit's name, without .service.")]


def _where(user: bool | None, unit_dir: Path | None) -> tuple[Scope, Path, bool]:
    from stackyard.platform.service import default_scope, default_unit_dir, systemd_running

    scope: Scope = default_scope() if user is None else ("user" if user else "system")
    directory = unit_dir or default_unit_dir(scope)
    # A unit written elsewhere (a package build, a test) is not for the running systemd.
    running = systemd_running() and unit_dir is None
    return scope, directory, running


@platform_options
def install(
    settings: Settings,
    user: UserScope = None,
    unit_dir: UnitDir = None,
    name: Name = "stackyard",
    json_output: Json = False,
) -> None:
    """Write and enable a unit that runs `stackyard up` (these settings) at boot, and
    again when it fails. With systemd running, start it now."""
    from stackyard.platform.service import apply, plan_install

    settings = keep_eab_hmac(settings)  # sealed: the unit's command line has the key id
    scope, directory, running = _where(user, unit_dir)
    plan = plan_install(settings, scope=scope, unit_dir=directory, name=name, running=running)
    apply(plan)
    _report({"unit": str(plan.unit), "notes": list(plan.notes)}, json_output)


def uninstall(
    user: UserScope = None,
    unit_dir: UnitDir = None,
    name: Name = "stackyard",
    json_output: Json = False,
) -> None:
    """Stop and remove the unit. The data plane keeps serving the apps (`stackyard down
    --all` stops it)."""
    from stackyard.platform.service import apply, plan_uninstall

    scope, directory, running = _where(user, unit_dir)
    plan = plan_uninstall(scope=scope, unit_dir=directory, name=name, running=running)
    if not plan.unit.exists():
        raise UsageError(
            f"no unit at {plan.unit}", hint="install it with `stackyard service install`"
        )
    apply(plan)
    _report({"unit": str(plan.unit), "notes": list(plan.notes)}, json_output)


def status(
    data_dir: DataDir = None,
    user: UserScope = None,
    unit_dir: UnitDir = None,
    name: Name = "stackyard",
    json_output: Json = False,
) -> None:
    """Show the unit (installed, enabled, as systemd sees it) and the platform's processes."""
    from stackyard.platform.dataplane import dataplane_status
    from stackyard.platform.service import service_status
    from stackyard.platform.state import running_state

    settings = settings_for(data_dir)
    scope, directory, running = _where(user, unit_dir)
    found = service_status(scope=scope, unit_dir=directory, name=name, running=running)
    control = running_state(settings.state_file)
    dataplane = dataplane_status(settings)
    found["control_plane"] = {"pid": control.pid, "api": control.api_url} if control else None
    found["dataplane"] = (
        {"pid": dataplane["pid"], "components": dataplane["components"]} if dataplane else None
    )
    if json_output:
        print_json(found)
        return
    state = "installed" if found["installed"] else "not installed"
    enabled = ", enabled (starts at boot)" if found["enabled"] else ""
    console.print(f"unit           {found['unit']}: {state}{enabled}")
    if running and found["installed"]:
        console.print(
            f"systemd        {found.get('ActiveState', '?')} ({found.get('SubState', '?')}), "
            f"main pid {found.get('MainPID', '?')}, restarts {found.get('NRestarts', '?')}"
        )
    elif not running:
        console.print("systemd        not running here (the unit starts at the next boot)")
    console.print(
        f"control plane  pid {control.pid}, API {control.api_url}" if control else
        "control plane  not running"
    )  # fmt: skip
    if dataplane is None:
        console.print("data plane     not running: the apps are not served")
    else:
        pids = ", ".join(f"{n} {c['pid']}" for n, c in dataplane["components"].items())
        console.print(f"data plane     keeper {dataplane['pid']}; {pids}")


def _report(found: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(found)
        return
    for note in found["notes"]:
        console.print(note)


app.command()(install)
app.command()(status)
app.command()(uninstall)
