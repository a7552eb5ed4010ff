"""`stackyard upgrade`: replace the control plane with this version while the apps serve.

Run by the new version (installed next to, or over, the running one):

1. **Trial.** A copy of the database (SQLite's online backup) is migrated to this
   version's schema. If that fails, nothing else happens: the running version keeps
   running and the data is as it was.
2. **Data plane.** It keeps running (this version adopts it). A platform of an earlier
   version, whose Caddy and registry were its children and whose upstreams lived in its
   own process, is handed over: a new data plane starts next to it, seeded with its
   routes and upstreams, on the same ports (Caddy binds them with SO_REUSEPORT), and
   also answers the old upstream address once the old process lets it go, so that the
   old Caddy finishes its requests while it drains.
3. **Switch.** The old control plane is stopped, the database is backed up next to
   itself (``stackyard.db.before-upgrade``), and this version starts; it migrates the
   database. If it fails to start, the backup is put back and the old version is
   started again with the command line and environment it had.

Under systemd (the old control plane runs in a unit), step 3 is ``systemctl restart``.
"""

from __future__ import annotations

import re
import shlex
import sqlite3
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from stackyard.errors import ComponentError, StackyardError
from stackyard.platform.dataplane import ensure_dataplane, set_registry_mode
from stackyard.platform.lifecycle import (
    api_answers,
    start_background,
    stop_control_plane,
)
from stackyard.platform.state import PlatformState, pid_alive, running_state
from stackyard.router.caddy import HOSTS_SERVER, PREFIX, CaddyRouter, routes_in
from stackyard.router.directory import Table, lookup_srv, write_table
from stackyard.settings import Settings
from stackyard.store.database import migrate, open_database

BACKUP_SUFFIX = ".before-upgrade"
# Settings from a `stackyard up` command line (its arguments after `up`).
CommandLineReader = Callable[[Sequence[str]], Settings]
# After the old Caddy stopped listening on the stages' ports: the time its requests in
# flight have to finish, as a deployment's default drain.
LEGACY_DRAIN = 2.0


@dataclass(frozen=True)
class RunningControlPlane:
    """The control plane to replace: its state file, and how it was started."""

    state: PlatformState
    argv: tuple[str, ...]
    env: dict[str, str]
    unit: tuple[str, ...] | None  # the systemctl arguments that restart its unit, if any


@dataclass(frozen=True)
class UpgradeReport:
    old_pid: int | None
    new_pid: int
    legacy: bool  # the data plane was handed over from a version without one
    backup: Path | None
    lines: tuple[str, ...]


class UpgradeRefused(ComponentError):
    """The upgrade did not happen, and nothing was changed."""

    retryable = False


def systemd_unit(cgroup: str) -> tuple[str, ...] | None:
    """The ``systemctl`` arguments that restart the unit a process runs in, from its
    ``/proc/<pid>/cgroup``; None when it runs in no service unit."""
    for line in cgroup.splitlines():
        path = line.rpartition(":")[2]
        units = re.findall(r"/([^/]+\.service)(?=/|$)", path)
        if not units or units[-1].startswith("user@"):
            continue
        user = any(unit.startswith("user@") for unit in units)  # the user's own manager
        return (*(("--user",) if user else ()), "restart", units[-1])
    return None


def running_control_plane(settings: Settings) -> RunningControlPlane | None:
    state = running_state(settings.state_file)
    if state is None:
        return None
    proc = Path(f"/proc/{state.pid}")
    try:
        argv = tuple(a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a)
        raw = (proc / "environ").read_bytes().split(b"\0")
        cgroup = (proc / "cgroup").read_text()
    except OSError as exc:
        raise ComponentError(
            f"cannot read how the control plane (pid {state.pid}) was started: {exc}",
            hint="run `stackyard upgrade` as the platform's user",
        ) from exc
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    unit = systemd_unit(cgroup) if "INVOCATION_ID" in env else None
    return RunningControlPlane(state, argv, env, unit)


def settings_of(
    base: Settings, running: RunningControlPlane | None, read: CommandLineReader
) -> Settings:
    """The new control plane's settings: those the running one was started with (its
    command line after ``up``, read by ``read`` with `up`'s own options; its ports as it
    reports them), else ``base``."""
    if running is None:
        return base
    argv = list(running.argv)
    args = argv[argv.index("up") + 1 :] if "up" in argv else []
    return read(args).with_overrides(
        data_dir=base.data_dir,
        api_port=int(running.state.api_url.rsplit(":", 1)[1]),
        registry_port=int(running.state.registry.rsplit(":", 1)[1]),
    )


# -- the database ---------------------------------------------------------------------------


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (its online backup API)."""
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)
    origin.close()
    copy.close()


def trial_migration(settings: Settings) -> None:
    """Migrate a copy of the database; UpgradeRefused (nothing changed) if that fails."""
    database = settings.data_dir / "stackyard.db"
    if not database.exists():
        return
    trial = settings.run_dir / "upgrade-trial.db"
    try:
        copy_database(database, trial)
        engine = open_database(f"sqlite:///{trial}")
        try:
            migrate(engine)
        finally:
            engine.dispose()
    except StackyardError as exc:
        raise UpgradeRefused(
            f"this version's database migrations fail on a copy of {database}: {exc.message}",
            hint="nothing was changed: the running version keeps running; report the "
            "failure, or install a version whose migrations work",
        ) from exc
    except sqlite3.Error as exc:
        raise UpgradeRefused(f"cannot copy {database} for a trial migration: {exc}") from exc
    finally:
        for path in trial.parent.glob(f"{trial.name}*"):
            path.unlink(missing_ok=True)


# -- the data plane of an earlier version ---------------------------------------------------


def hand_over_legacy(settings: Settings, state: PlatformState) -> list[str]:
    """Start this version's data plane next to an earlier version's Caddy: same routes,
    same upstreams, same ports. Its registry starts once the old one has stopped."""
    try:
        config = httpx.get(f"{state.router_admin}/config/", timeout=10, trust_env=False).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise UpgradeRefused(
            f"cannot read the running Caddy's routes at {state.router_admin}: {exc}",
            hint="nothing was changed; check that the platform runs (`stackyard status`)",
        ) from exc
    found = routes_in(config)
    table: Table = {}
    for route, resolver in found.routes:
        table[route.name] = tuple(lookup_srv(resolver, route.name)) if resolver else ()
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_table(settings.upstreams_file, table)
    resolvers = sorted({resolver for _, resolver in found.routes if resolver})
    ensure_dataplane(settings, registry_mode="stopped", also_serve=resolvers)
    host_port = found.host_port or settings.http_port
    with CaddyRouter(
        settings.caddy_admin_sockets, settings.dataplane_socket, host_port=host_port
    ) as router:
        for route, _ in found.routes:
            router.ensure_route(route, table[route.name])
    _drain_legacy_caddy(state, config)
    return [
        f"handed {len(found.routes)} route(s) over to the new data plane "
        f"({', '.join(sorted(table)) or 'none'}); the old Caddy drained"
    ]


def _drain_legacy_caddy(state: PlatformState, config: dict[str, object]) -> None:
    """Take every Stackyard server out of the old Caddy (one reload), and give its requests
    in flight the time to finish while the old upstream responder still answers."""
    apps = config.get("apps")
    http = apps.get("http") if isinstance(apps, dict) else None
    servers = http.get("servers") if isinstance(http, dict) else None
    if not isinstance(servers, dict) or not servers:
        return
    kept = {name: server for name, server in servers.items()
            if not name.startswith(PREFIX) and name != HOSTS_SERVER}  # fmt: skip
    drained = {**config, "apps": {**apps, "http": {**http, "servers": kept}}}  # type: ignore[dict-item]
    try:
        answer = httpx.post(f"{state.router_admin}/load", json=drained, timeout=30,
                            trust_env=False)  # fmt: skip
    except httpx.HTTPError as exc:
        raise ComponentError(f"the old Caddy at {state.router_admin} did not drain: {exc}") from exc
    if answer.status_code >= 400:
        raise ComponentError(
            f"the old Caddy at {state.router_admin} refused to drain: {answer.text.strip()}"
        )
    time.sleep(LEGACY_DRAIN)


def start_registry_when_free(settings: Settings, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            set_registry_mode(settings, "read-write")
            return
        except ComponentError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the old registry is still stopping


# -- the switch -----------------------------------------------------------------------------


def upgrade(base: Settings, read: CommandLineReader) -> UpgradeReport:
    """Replace the running control plane with this version; ``read`` turns its command
    line into settings (the CLI's, so one list of options serves `up` and this)."""
    running = running_control_plane(base)
    settings = settings_of(base, running, read)
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    trial_migration(settings)
    lines = ["the database migrates: a copy of it was migrated to this version"]
    legacy = running is not None and running.state.legacy
    if running is not None and legacy:
        lines += hand_over_legacy(settings, running.state)
    else:
        ensure_dataplane(settings)
        lines.append("the data plane keeps running; this version adopts it")
    if running is not None and running.unit is not None:
        return _restart_unit(settings, running, legacy, lines)
    old = stop_control_plane(settings) if running is not None else None
    if legacy:
        start_registry_when_free(settings)
    backup = _back_up(settings)
    try:
        state = start_background(settings)
    except StackyardError as exc:
        _roll_back(settings, running, backup)
        raise ComponentError(
            f"this version did not start ({exc.message}); the database was put back as it "
            "was" + (" and the previous version started again" if running else ""),
            hint=f"the backup stays at {backup}" if backup else exc.hint,
        ) from exc
    lines.append(f"stopped pid {old.pid}; started pid {state.pid}" if old else
                 f"started pid {state.pid}")  # fmt: skip
    return UpgradeReport(old.pid if old else None, state.pid, legacy, backup, tuple(lines))


def _back_up(settings: Settings) -> Path | None:
    database = settings.data_dir / "stackyard.db"
    if not database.exists():
        return None
    backup = database.with_name(database.name + BACKUP_SUFFIX)
    copy_database(database, backup)
    backup.chmod(0o600)
    return backup


def _roll_back(
    settings: Settings, running: RunningControlPlane | None, backup: Path | None
) -> None:
    stop_control_plane(settings)
    if backup is not None:
        with (
            sqlite3.connect(backup) as origin,
            sqlite3.connect(settings.data_dir / "stackyard.db") as live,
        ):
            origin.backup(live)
        origin.close()
        live.close()
    if running is None:
        return
    log_path = settings.logs_dir / "platform.log"
    with log_path.open("ab") as log:
        subprocess.Popen(
            running.argv, env=running.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + settings.component_timeout + 30
    while time.monotonic() < deadline and not api_answers(settings.api_url):
        time.sleep(0.1)


def _restart_unit(
    settings: Settings, running: RunningControlPlane, legacy: bool, lines: list[str]
) -> UpgradeReport:
    command = ("systemctl", *(running.unit or ()))
    if legacy:
        raise UpgradeRefused(
            "the running version is a unit of systemd and has no data plane of its own",
            hint=f"stop it with `{shlex.join(command).replace('restart', 'stop')}`, then start "
            "this version with the same command (one short outage), or upgrade by hand",
        )
    backup = _back_up(settings)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise ComponentError(f"`{shlex.join(command)}` failed: {done.stderr.strip()}")
    deadline = time.monotonic() + settings.component_timeout + 30
    state: PlatformState | None = None
    while time.monotonic() < deadline:
        state = running_state(settings.state_file)
        if state is not None and state.pid != running.state.pid and api_answers(state.api_url):
            break
        time.sleep(0.2)
    if state is None or state.pid == running.state.pid or not pid_alive(state.pid):
        raise ComponentError(
            f"the unit did not come back with this version after `{shlex.join(command)}`",
            hint=f"see journalctl; the database backup is {backup}",
        )
    lines.append(f"restarted the unit ({shlex.join(command)}): pid {running.state.pid} -> "
                 f"{state.pid}")  # fmt: skip
    return UpgradeReport(running.state.pid, state.pid, False, backup, tuple(lines))
