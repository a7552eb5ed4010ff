"""The data plane's keeper: the process that keeps the apps reachable while the control
plane is stopped, killed, restarting or being upgraded.

It serves the upstream table over DNS (router/directory.py, persisted in the data dir),
answers the control plane on a unix socket (mode 0600), and keeps the registry and every
Caddy running: it adopts them by pid when it starts, and starts again any that exits.
The control plane starts it detached (`platform/dataplane.py`) and restarts it if it
dies; SIGTERM stops it together with the components it keeps (``stackyard down --all``).

Run as ``python -m stackyard.platform.keeper --data-dir D --registry-port P``; with
``--detach`` the command returns once the data plane is ready (status 0) or could not
start (status 1, the reason in its log), and the keeper runs on as a daemon.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from stackyard.control_socket import ControlServer, Message
from stackyard.errors import ComponentError, StackyardError, UsageError
from stackyard.platform.components import (
    REGISTRY_MODES,
    ComponentSpec,
    RegistryMode,
    caddy_admin_listen,
    caddy_autosave,
    plan_components,
)
from stackyard.platform.state import DataplaneRecord, pid_alive, wait_gone
from stackyard.platform.supervisor import (
    Kept,
    answers,
    check_ports_free,
    cmdline,
    runs_command_of,
    spawn,
    stop,
    wait_ready,
)
from stackyard.router.directory import UpstreamDirectory
from stackyard.settings import Settings

log = logging.getLogger("stackyard.keeper")
CHECK_EVERY = 0.2  # seconds between looks at the components: a dead one restarts this fast
RESTART_BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0)  # after 0, 1, 2, ... failed starts in a row
TAKE_OVER_FOR = 600.0  # seconds an upgrade waits for the earlier upstream address
PROTOCOL = 1  # of the control socket; a control plane checks it before it relies on it
# Operations added within a protocol (a keeper of an earlier version lacks them, and is
# replaced by ensure_dataplane); an earlier control plane does not ask for them.
FEATURES = ("hosts",)  # the responder's host names (set_hosts, set_helpers, names)
MODULE = "stackyard.platform.keeper"
PIDFD_GETFD = 438  # the syscall's number (the same on every Linux architecture)


def is_keeper(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a keeper of ``data_dir`` (not a reused pid)."""
    line = cmdline(pid)
    return pid_alive(pid) and MODULE.encode() in line and str(data_dir).encode() in line


class Keeper:
    """Adopt or start every component, then keep them running until SIGTERM."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry_mode: RegistryMode = "read-write",
        also_serve: tuple[str, ...] = (),
        replace: bool = False,
    ) -> None:
        self.settings = settings
        self._also_serve = also_serve
        self._replace = replace  # take over from a running keeper of an earlier version
        self._lock = threading.RLock()  # the components and the record
        self._registry_lock = threading.Lock()  # one registry mode change at a time
        self._stopping = threading.Event()
        self._components: dict[str, Kept] = {}
        self._restarting: set[str] = set()
        self._failed_starts: dict[str, int] = {}
        self._next_start: dict[str, float] = {}
        self.registry_mode: RegistryMode = registry_mode  # unless a record says otherwise
        self.dns = ""  # the responder's address, once it is open
        self.started_at = time.time()

    # -- life

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Keep the data plane until SIGTERM; ``on_ready`` once every component answers."""
        settings = self.settings
        previous = DataplaneRecord.read(settings.dataplane_file)
        taken: socket.socket | None = None
        if (
            previous is not None
            and previous.pid != os.getpid()
            and is_keeper(previous.pid, settings.data_dir)
        ):
            if not self._replace:
                log.error("another keeper (pid %s) runs for %s", previous.pid, settings.data_dir)
                return 1
            taken = self._take_over_keeper(previous)
        if previous is not None and previous.registry_mode in REGISTRY_MODES:
            self.registry_mode = previous.registry_mode
        directory = self._open_directory(previous, taken)
        self.dns = directory.address
        try:
            self._bring_up(previous)
        except StackyardError as exc:
            log.error("the data plane did not start: %s%s", exc.message,
                      f" ({exc.hint})" if exc.hint else "")  # fmt: skip
            directory.close()
            return 1
        handlers = {
            **directory.handlers(),
            "status": self._status,
            "registry": self._registry,
        }
        server = ControlServer(settings.dataplane_socket, handlers)
        self._record()
        for address in self._also_serve:
            threading.Thread(target=self._take_over, args=(directory, address), daemon=True).start()
        log.info(
            "data plane ready: upstreams on udp/%s, components %s",
            self.dns,
            ", ".join(f"{k.spec.name} (pid {k.pid}{', adopted' if k.adopted else ''})"
                      for k in self._components.values()),
        )  # fmt: skip
        if on_ready is not None:
            on_ready()
        try:
            while not self._stopping.wait(CHECK_EVERY):
                self._check()
        finally:
            server.close()
            log.info("stopping the data plane")
            self._stop_components()
            directory.close()
            current = DataplaneRecord.read(settings.dataplane_file)
            if current is not None and current.pid == os.getpid():
                settings.dataplane_file.unlink(missing_ok=True)
        return 0

    def request_stop(self) -> None:
        self._stopping.set()

    def _take_over(self, directory: UpstreamDirectory, address: str) -> None:
        """Answer on the upstream address of the version being upgraded from, as soon as
        its process lets the port go: its Caddy still asks there while it drains."""
        deadline = time.monotonic() + TAKE_OVER_FOR
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if directory.serve_also(address):
                log.info("answering the earlier version's upstream address %s too", address)
                return
            time.sleep(0.01)
        log.warning("the earlier version kept %s; its Caddy asks it no more", address)

    def _take_over_keeper(self, previous: DataplaneRecord) -> socket.socket | None:
        """Stop the earlier keeper, its components left running (adopted next); first take
        its responder's socket, so that no query Caddy sent meanwhile is lost (Caddy would
        wait 5 s for it, holding every lookup)."""
        port = int(previous.dns.rpartition(":")[2] or 0)
        taken = take_udp_socket(previous.pid, port) if port else None
        if taken is None:
            log.warning("could not take keeper %s's socket; its queries in flight are lost",
                        previous.pid)  # fmt: skip
        log.info("replacing the keeper of an earlier version (pid %s)", previous.pid)
        os.kill(previous.pid, signal.SIGKILL)
        wait_gone([previous.pid], 5.0)
        return taken

    def _open_directory(
        self, previous: DataplaneRecord | None, taken: socket.socket | None = None
    ) -> UpstreamDirectory:
        """The responder on the port Caddy's routes already name, if it is still free."""
        port = 0
        if previous is not None:
            port = int(previous.dns.rpartition(":")[2] or 0)
        try:
            return UpstreamDirectory(port=port, table_file=self.settings.upstreams_file, sock=taken)
        except OSError as exc:
            # The control plane re-points every route at the new port when it starts.
            log.warning("upstream port %s is taken (%s); using a new one", port, exc)
            return UpstreamDirectory(table_file=self.settings.upstreams_file)

    def _bring_up(self, previous: DataplaneRecord | None) -> None:
        """Adopt each component the previous keeper left running, start the others. If one
        fails to start, those started here stop again; adopted ones keep serving."""
        recorded = previous.components if previous is not None else {}
        fresh: list[ComponentSpec] = []
        for spec in plan_components(self.settings, registry_mode=self.registry_mode):
            pid = recorded.get(spec.name)
            if pid and pid_alive(pid) and runs_command_of(pid, spec) and answers(spec) is None:
                self._components[spec.name] = Kept(spec, pid, adopted=True)
            else:
                fresh.append(spec)
        check_ports_free([(s.name, self.settings.host, s.port) for s in fresh if s.port])
        started: list[Kept] = []
        try:
            for spec in fresh:
                self._prepare(spec)
                started.append(spawn(spec))
            with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
                timeout = self.settings.component_timeout
                list(pool.map(lambda kept: wait_ready(kept, timeout), started))
        except BaseException:
            for kept in started:
                stop(kept)
            raise
        for kept in started:
            self._components[kept.spec.name] = kept

    def _prepare(self, spec: ComponentSpec) -> None:
        """Before a Caddy starts: put aside a saved config it must not resume (unreadable,
        or from a data directory at another path), so it starts from its base config."""
        if spec.ready_socket is None:
            return
        instance = int(spec.name.rpartition("-")[2])
        saved = caddy_autosave(self.settings, instance)
        try:
            config = json.loads(saved.read_text(encoding="utf-8"))
            usable = config.get("admin", {}).get("listen") == caddy_admin_listen(spec.ready_socket)
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError):
            usable = False
        if not usable:
            log.warning("%s: not resuming %s (unreadable or another data directory's); the "
                        "control plane sets its routes again", spec.name, saved)  # fmt: skip
            saved.replace(saved.with_suffix(".json.unused"))

    def _stop_components(self) -> None:
        with self._lock:
            kept = list(self._components.values())
            self._components.clear()
        with ThreadPoolExecutor(max_workers=max(1, len(kept))) as pool:
            list(pool.map(stop, kept))

    # -- keeping them running

    def _check(self) -> None:
        now = time.monotonic()
        with self._lock:
            dead = [
                name
                for name, kept in self._components.items()
                if name not in self._restarting
                and now >= self._next_start.get(name, 0.0)
                and not kept.alive()
            ]
            self._restarting.update(dead)
        for name in dead:
            threading.Thread(target=self._restart, args=(name,), daemon=True).start()

    def _restart(self, name: str) -> None:
        try:
            with self._lock:
                old = self._components.get(name)
            if old is None or self._stopping.is_set():
                return
            log.warning("%s (pid %s) exited with status %s; starting it again",
                        name, old.pid, old.exit_status())  # fmt: skip
            try:
                self._prepare(old.spec)
                fresh = spawn(old.spec)
            except ComponentError as exc:
                self._note_failure(name, exc)
                return
            with self._lock:
                if self._components.get(name) is old:
                    self._components[name] = fresh
            try:
                wait_ready(fresh, self.settings.component_timeout)
            except ComponentError as exc:
                self._note_failure(name, exc)
                return
            self._failed_starts.pop(name, None)
            log.info("%s is back (pid %s)", name, fresh.pid)
            self._record()
        finally:
            with self._lock:
                self._restarting.discard(name)

    def _note_failure(self, name: str, exc: ComponentError) -> None:
        count = self._failed_starts.get(name, 0) + 1
        self._failed_starts[name] = count
        delay = RESTART_BACKOFF[min(count, len(RESTART_BACKOFF) - 1)]
        self._next_start[name] = time.monotonic() + delay
        log.error("%s did not come back (%s); trying again in %.0f s", name, exc, delay)

    def _record(self) -> None:
        with self._lock:
            DataplaneRecord(
                pid=os.getpid(),
                data_dir=str(self.settings.data_dir),
                dns=self.dns,
                components={name: kept.pid for name, kept in self._components.items()},
                registry_mode=self.registry_mode,
                protocol=PROTOCOL,
                started_at=self.started_at,
            ).write(self.settings.dataplane_file)

    # -- control operations

    def _status(self, request: Message) -> Message:
        with self._lock:
            kept = dict(self._components)
            restarting = set(self._restarting)
        components: dict[str, Message] = {}
        for name, one in kept.items():
            entry: Message = {"pid": one.pid, "adopted": one.adopted}
            entry["alive"] = one.alive() and name not in restarting
            if request.get("check"):
                entry["problem"] = answers(one.spec) if entry["alive"] else "restarting"
            components[name] = entry
        return {
            "pid": os.getpid(),
            "data_dir": str(self.settings.data_dir),
            "protocol": PROTOCOL,
            "features": list(FEATURES),
            "dns": self.dns,
            "registry": self.settings.registry_endpoint,
            "registry_mode": self.registry_mode,
            "components": components,
        }

    def _registry(self, request: Message) -> Message:
        mode = request.get("mode")
        if mode not in REGISTRY_MODES:
            raise UsageError(f"registry mode {mode!r} is not one of {', '.join(REGISTRY_MODES)}")
        with self._registry_lock:
            self._set_registry_mode(mode)
        return {"registry_mode": self.registry_mode}

    def _set_registry_mode(self, mode: RegistryMode) -> None:
        with self._lock:
            current = self._components.get("registry")
        if mode == self.registry_mode and (mode == "stopped" or current is not None):
            return
        with self._lock:
            # Out of the checked set first, so that it is not "restarted" while it stops.
            self._components.pop("registry", None)
        if current is not None:
            stop(current)
        self.registry_mode = mode
        self._record()
        if mode == "stopped":
            log.info("registry stopped")
            return
        spec = next(
            s for s in plan_components(self.settings, registry_mode=mode) if s.name == "registry"
        )
        self._wait_port_free(spec)
        fresh = spawn(spec)
        with self._lock:
            self._components["registry"] = fresh
        wait_ready(fresh, self.settings.component_timeout)
        self._record()
        log.info("registry started %s (pid %s)", mode, fresh.pid)

    def _wait_port_free(self, spec: ComponentSpec) -> None:
        """The stopped registry's port may be held a moment longer (a connection the
        kernel still closes, or a short-lived client that took it as its own port): wait
        for it, up to the component timeout, before naming what holds it."""
        deadline = time.monotonic() + self.settings.component_timeout
        while True:
            try:
                check_ports_free([(spec.name, self.settings.host, spec.port or 0)])
                return
            except ComponentError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)


@dataclass(frozen=True)
class Options:
    settings: Settings
    detach: bool
    registry_mode: RegistryMode
    also_serve: tuple[str, ...]
    replace: bool = False


def _parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--detach", action="store_true", help="return once it is ready")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--registry-port", type=int, required=True)
    parser.add_argument("--router-instances", type=int, default=Settings.router_instances)
    parser.add_argument("--component-timeout", type=float, default=Settings.component_timeout)
    parser.add_argument(
        "--registry-mode", choices=REGISTRY_MODES, default="read-write",
        help="the registry's mode when no earlier keeper recorded one",
    )  # fmt: skip
    parser.add_argument(
        "--also-serve", action="append", default=[], metavar="IP:PORT",
        help="an earlier version's upstream address, answered once it is free (upgrade)",
    )  # fmt: skip
    parser.add_argument(
        "--replace", action="store_true",
        help="take over from a running keeper of an earlier version (its socket, then it stops)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings(
        data_dir=args.data_dir,
        registry_port=args.registry_port,
        router_instances=args.router_instances,
        component_timeout=args.component_timeout,
    )
    return Options(settings, args.detach, args.registry_mode, tuple(args.also_serve), args.replace)


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    on_ready: Callable[[], None] | None = None
    if options.detach:
        # Fork before any thread exists: the parent waits for the child's word and exits
        # with it, so whoever started us learns "ready" or "failed" from our exit status,
        # and the keeper itself is nobody's child (no zombie, no death with a parent).
        readable, writable = os.pipe()
        if os.fork() > 0:
            os.close(writable)
            with os.fdopen(readable, "rb") as pipe:
                return 0 if pipe.read() == b"ready" else 1
        os.close(readable)
        os.setsid()

        def on_ready() -> None:
            os.write(writable, b"ready")
            os.close(writable)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every readiness check
    keeper = Keeper(
        options.settings,
        registry_mode=options.registry_mode,
        also_serve=options.also_serve,
        replace=options.replace,
    )

    def stop_on(_signum: int, _frame: FrameType | None) -> None:
        keeper.request_stop()

    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)
    return keeper.run(on_ready)


def take_udp_socket(pid: int, port: int) -> socket.socket | None:
    """A duplicate of process ``pid``'s UDP socket bound to 127.0.0.1:``port``, taken with
    pidfd_getfd(2) (Linux 5.6+, the rights of ptrace over ``pid``); None when it cannot be
    taken. Both processes then hold the same socket: what is queued on it stays."""
    inode = _udp_inode(port)
    if inode is None:
        return None
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != f"socket:[{inode}]":
                continue
        except OSError:
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            taken = int(libc.syscall(PIDFD_GETFD, pidfd, int(fd), 0))
        finally:
            os.close(pidfd)
        return socket.socket(fileno=taken) if taken >= 0 else None
    return None


def _udp_inode(port: int) -> str | None:
    """The inode of the UDP socket bound to 127.0.0.1:``port`` (from /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[1] == wanted:
            return fields[9]
    return None


if __name__ == "__main__":
    sys.exit(main())
