"""The control plane's side of the data plane: start or adopt it, watch it, stop it, and
change the registry's mode.

The data plane (the keeper, its upstream responder, the registry and the Caddy processes;
see keeper.py) runs detached from the control plane and outlives it. ``stackyard up``
calls ``ensure_dataplane`` (adopt a running one, else start one) and keeps a
``DataplaneWatch`` that starts the keeper again if it dies; ``stackyard down --all`` calls
``stop_dataplane``. ``set_registry_mode`` is how maintenance (the registry's garbage
collection, a restore) stops the registry, starts it read-only, and starts it again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from stackyard.control_socket import Message, ask, check_socket_path
from stackyard.errors import ComponentError, RetryableError, StackyardError
from stackyard.platform.components import REGISTRY_MODES, RegistryMode
from stackyard.platform.keeper import FEATURES, MODULE, PROTOCOL, is_keeper
from stackyard.platform.state import DataplaneRecord, pid_alive, signal_pids, wait_gone
from stackyard.platform.supervisor import check_ports_free, cmdline, tail
from stackyard.settings import Settings

log = logging.getLogger(__name__)
STATUS_TIMEOUT = 5.0
WATCH_EVERY = 1.0  # seconds between the control plane's looks at the keeper


def keeper_argv(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", MODULE,
        "--data-dir", str(settings.data_dir),
        "--registry-port", str(settings.registry_port),
        "--router-instances", str(settings.router_instances),
        "--component-timeout", str(settings.component_timeout),
    ]  # fmt: skip


def dataplane_status(settings: Settings, *, check: bool = False) -> Message | None:
    """What the keeper says of itself and its components; None when no keeper answers.
    With ``check``, each component's readiness check is run too (``problem``)."""
    try:
        return ask(
            settings.dataplane_socket, {"op": "status", "check": check}, timeout=STATUS_TIMEOUT
        )
    except RetryableError:
        return None


def ensure_dataplane(
    settings: Settings,
    *,
    registry_mode: RegistryMode = "read-write",
    also_serve: Sequence[str] = (),
) -> Message:
    """Adopt the data plane of ``settings.data_dir`` if it runs, else start it; return its
    status once every component answers. Nothing that runs is restarted, and no upstream
    changes: a new keeper adopts the components an earlier one left running.

    ``registry_mode`` applies to a keeper started here with no earlier record;
    ``also_serve`` are upstream addresses of an earlier version it takes over (upgrade).
    """
    for path in (settings.dataplane_socket, *settings.caddy_admin_sockets):
        check_socket_path(path)
    status = dataplane_status(settings)
    record = DataplaneRecord.read(settings.dataplane_file)
    replace = (
        status is not None
        and record is not None
        and _lacks_features(status)
        and is_keeper(record.pid, settings.data_dir)
    )
    if replace:
        # A keeper of an earlier version (an upgrade): this version's keeper takes its
        # responder's socket, stops it and adopts its components, which keep serving.
        log.warning("the data plane keeper (pid %s) is of an earlier version; replacing it",
                    record.pid if record else "?")  # fmt: skip
        status = None
    if status is not None:
        return _compatible(settings, status)
    if record is not None and not replace and is_keeper(record.pid, settings.data_dir):
        status = _wait_status(settings, 2.0)
        if status is not None:
            return _compatible(settings, status)
        # Alive but deaf: its components keep serving while a new keeper adopts them.
        log.warning("the data plane keeper (pid %s) does not answer; replacing it", record.pid)
        signal_pids([record.pid], signal.SIGKILL)
        wait_gone([record.pid], 5.0)
    registry = record.components.get("registry") if record else None
    recorded_mode = record.registry_mode if record else registry_mode
    if not (registry and _ours(registry, settings)) and recorded_mode != "stopped":
        check_ports_free([("registry", settings.host, settings.registry_port)])
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = settings.logs_dir / "dataplane.log"
    with log_path.open("ab") as log_handle:
        try:
            started = subprocess.run(
                [
                    *keeper_argv(settings),
                    "--detach",
                    "--registry-mode",
                    registry_mode,
                    *(arg for address in also_serve for arg in ("--also-serve", address)),
                    *(["--replace"] if replace else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no Ctrl-C from the terminal of a foreground `up`
                timeout=settings.component_timeout + 15,
                check=False,
            )
        except subprocess.TimeoutExpired:
            started = None
    status = dataplane_status(settings) if started and started.returncode == 0 else None
    if status is None:
        raise ComponentError(
            "the data plane did not start"
            + (f" (status {started.returncode})" if started else " in time")
            + f"; last lines of {log_path}:\n{tail(log_path, 15)}",
            hint="install a missing component with scripts/setup-host, or free the port it "
            "names; the component logs are next to it",
        )
    return _compatible(settings, status)


def _wait_status(settings: Settings, timeout: float) -> Message | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dataplane_status(settings)
        if status is not None:
            return status
        time.sleep(0.05)
    return None


def _lacks_features(status: Message) -> bool:
    found = status.get("features")
    return not isinstance(found, list) or not set(FEATURES) <= set(found)


def _compatible(settings: Settings, status: Message) -> Message:
    if status.get("protocol") != PROTOCOL:
        raise ComponentError(
            f"the data plane of {settings.data_dir} speaks protocol {status.get('protocol')}, "
            f"this Stackyard speaks {PROTOCOL}",
            hint="upgrade with `stackyard upgrade`, which hands the data plane over",
        )
    if status.get("registry") != settings.registry_endpoint:
        raise ComponentError(
            f"the data plane of {settings.data_dir} runs its registry on "
            f"{status.get('registry')}, not {settings.registry_endpoint}",
            hint=f"start with --registry-port {str(status.get('registry')).rpartition(':')[2]}, "
            "or stop it first with `stackyard down --all`",
        )
    return status


def _ours(pid: int, settings: Settings) -> bool:
    return pid_alive(pid) and str(settings.data_dir).encode() in cmdline(pid)


def stop_dataplane(settings: Settings, timeout: float = 30.0) -> DataplaneRecord | None:
    """Stop the keeper and every component it keeps (``stackyard down --all``); by the
    pids it recorded, each checked to be ours first. None when nothing was recorded."""
    record = DataplaneRecord.read(settings.dataplane_file)
    if record is None:
        return None
    if is_keeper(record.pid, settings.data_dir):
        os.kill(record.pid, signal.SIGTERM)  # it stops its components, then itself
        wait_gone([record.pid], timeout)
    leftover = [pid for pid in record.components.values() if _ours(pid, settings)]
    if is_keeper(record.pid, settings.data_dir):
        leftover.append(record.pid)
    signal_pids(leftover, signal.SIGTERM)
    signal_pids(wait_gone(leftover, 10.0), signal.SIGKILL)
    wait_gone(leftover, 5.0)
    for path in (settings.dataplane_file, settings.dataplane_socket):
        path.unlink(missing_ok=True)
    return record


def set_registry_mode(settings: Settings, mode: RegistryMode, *, timeout: float = 60.0) -> None:
    """Put the data plane's registry in ``mode`` and return once it is so:

    - ``"stopped"``: the registry process is stopped, and stays stopped (the keeper does
      not start it again) until another mode is set;
    - ``"read-only"``: it serves pulls and refuses pushes (for its garbage collection);
    - ``"read-write"``: it serves everything again.

    A change restarts the registry process (a second or so without a registry: running
    tasks are not affected, a push or pull in that moment fails and is retried). The mode
    survives a restart of the keeper. ComponentError when the data plane is not running
    or the registry does not come back.
    """
    if mode not in REGISTRY_MODES:
        raise ComponentError(f"registry mode {mode!r} is not one of {', '.join(REGISTRY_MODES)}")
    ask(settings.dataplane_socket, {"op": "registry", "mode": mode}, timeout=timeout)


class DataplaneWatch:
    """The control plane's look at its data plane, every second: a dead keeper is started
    again (it adopts what still runs), and ``on_change`` is called whenever a component's
    pid changed, so that the controller checks every route (a Caddy that could not resume
    its config comes back without routes)."""

    def __init__(self, settings: Settings, on_change: Callable[[], None]) -> None:
        self.settings = settings
        self.on_change = on_change
        self._stopping = threading.Event()
        self._seen = self._pids()
        self._thread = threading.Thread(target=self._run, name="dataplane-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.ident is not None:  # a start refused early never started it
            self._thread.join(timeout=10)

    def _pids(self) -> dict[str, Any]:
        try:
            record = DataplaneRecord.read(self.settings.dataplane_file)
        except ComponentError:
            return {}
        return {} if record is None else {"keeper": record.pid, **record.components}

    def _run(self) -> None:
        while not self._stopping.wait(WATCH_EVERY):
            try:
                self._look()
            except StackyardError as exc:
                log.error("the data plane: %s%s", exc.message, f" ({exc.hint})" if exc.hint else "")
            except Exception:  # the watch must outlive any one failure
                log.exception("watching the data plane failed")

    def _look(self) -> None:
        pids = self._pids()
        keeper = pids.get("keeper")
        if not (keeper and is_keeper(int(keeper), self.settings.data_dir)):
            log.warning("the data plane keeper is not running; starting it (it adopts the "
                        "components that still run)")  # fmt: skip
            ensure_dataplane(self.settings)
            pids = self._pids()
        if pids != self._seen:
            changed = sorted(k for k in pids.keys() | self._seen.keys()
                             if pids.get(k) != self._seen.get(k))  # fmt: skip
            log.info("data plane processes changed (%s); checking every route", ", ".join(changed))
            self._seen = pids
            self.on_change()
