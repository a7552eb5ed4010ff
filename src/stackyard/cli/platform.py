"""``stackyard up``, ``down`` and ``status``: run the platform with embedded defaults.

The control plane (`up`) runs on top of a data plane (registry, Caddy, the upstream
responder) that outlives it: `down` stops the control plane only, `down --all` both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, print_json
from stackyard.cli.shared import (
    DataDir,
    Json,
    keep_eab_hmac,
    platform_options,
    settings_for,
    settings_of_command_line,
)
from stackyard.settings import Settings

if TYPE_CHECKING:
    from stackyard.platform.state import PlatformState

# platform.lifecycle (process supervision, httpx) loads inside up and down only.


def _describe(state: PlatformState, *, elapsed: float | None = None) -> None:
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    console.print(f"[green]Stackyard is up{took}[/]")
    console.print(f"  API          {state.api_url}")
    if Path(state.token_file).exists():
        console.print(f"  admin token  {state.token_file}  (the CLI reads it by itself)")
    else:  # the bootstrap token was revoked: people log in with their own
        console.print("  admin token  none (revoked): log in with `stackyard login`")
    console.print(f"  registry     {state.registry}")
    console.print(f"  router admin {state.router_admin}")
    if state.children:
        pids = ", ".join(f"{name} {pid}" for name, pid in state.children.items())
        console.print(f"  data plane   {pids}")


@platform_options
def up(
    settings: Settings,
    detach: Annotated[bool, typer.Option("-d", "--detach", help="Run in the background.")] = False,
    json_output: Json = False,
) -> None:
    """Start the control plane (API, store, deployments) and, unless it runs, the data plane
    (registry, Caddy, upstream responder). Ctrl-C stops the control plane; the apps keep
    serving."""
    from stackyard.platform.lifecycle import start_background
    from stackyard.platform.state import running_state

    settings = keep_eab_hmac(settings)
    existing = running_state(settings.state_file)
    if existing is not None:
        if json_output:
            print_json({"status": "already running", **existing.__dict__})
        else:
            console.print(f"Stackyard is already running (pid {existing.pid}).")
            _describe(existing)
        return
    started = time.monotonic()
    if detach:
        state = start_background(settings)
        if json_output:
            print_json({"status": "started", **state.__dict__})
        else:
            _describe(state, elapsed=time.monotonic() - started)
            console.print("Stop it with: stackyard down")
        return
    from stackyard.api.server import serve

    def on_ready(state: PlatformState) -> None:
        _describe(state, elapsed=time.monotonic() - started)
        console.print("Press Ctrl-C to stop.")

    serve(settings, on_ready=on_ready)
    console.print(
        "Stackyard stopped. The apps keep serving; `stackyard down --all` stops them too."
    )


def down(
    everything: Annotated[
        bool,
        typer.Option(
            "--all", help="Stop the data plane too (registry, Caddy): the apps stop serving."
        ),
    ] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Stop the control plane; the apps keep serving. With --all, stop the data plane too.
    Task containers keep running either way (the next `up` adopts them)."""
    from stackyard.platform.dataplane import stop_dataplane
    from stackyard.platform.lifecycle import stop_control_plane

    settings = settings_for(data_dir)
    state = stop_control_plane(settings)
    record = stop_dataplane(settings) if everything else None
    if json_output:
        print_json(
            {
                "stopped": state is not None,
                "pid": state.pid if state else None,
                "dataplane_stopped": record is not None,
            }
        )
        return
    if state is None:
        console.print(f"No Stackyard control plane is running for {settings.data_dir}.")
    else:
        console.print(f"Stackyard (pid {state.pid}) stopped.")
    if record is not None:
        console.print(f"Data plane (keeper pid {record.pid}) stopped: the apps are not served.")
    elif not everything:
        console.print("The data plane keeps serving the apps; `stackyard down --all` stops it.")


def upgrade(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Replace the running control plane with this version while the apps keep serving:
    migrate a copy of the database first (a failure changes nothing), keep (or hand over)
    the data plane, then stop the old control plane and start this one."""
    from stackyard.platform.upgrade import upgrade as run_upgrade

    report = run_upgrade(settings_for(data_dir), settings_of_command_line)
    if json_output:
        print_json(
            {
                "old_pid": report.old_pid,
                "new_pid": report.new_pid,
                "legacy": report.legacy,
                "backup": str(report.backup) if report.backup else None,
                "steps": list(report.lines),
            }
        )
        return
    for line in report.lines:
        console.print(f"  {line}")
    console.print(f"[green]Upgraded[/]: Stackyard runs as pid {report.new_pid}.")
    if report.backup:
        console.print(f"The database as it was before: {report.backup}")


def status(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Show whether the platform runs, and where its parts answer."""
    client = ApiClient.discover(settings_for(data_dir))
    info = client.get("/api/v1/status")
    if json_output:
        print_json(info)
        return
    console.print(f"Stackyard {info['version']} at {client.base_url}")
    console.print(f"  data dir     {info['data_dir']}")
    console.print(f"  registry     {info['registry']}")
    console.print(f"  router admin {info['router_admin']}")
    for name, detail in info.get("components", {}).items():
        console.print(f"  {name:<12} {detail}")


def register(app: typer.Typer) -> None:
    """Add the platform commands to the top-level app."""
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(upgrade)
