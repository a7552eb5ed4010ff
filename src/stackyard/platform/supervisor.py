"""Run component processes, wait until they answer, and stop every one of them.

Children get ``PR_SET_PDEATHSIG`` so they die with the platform even if it is killed,
and ``stop`` sends SIGTERM, then SIGKILL after a grace period, by pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

import httpx

from stackyard.errors import ComponentError
from stackyard.platform.components import ComponentSpec
from stackyard.ports import port_free

PR_SET_PDEATHSIG = 1
log = logging.getLogger(__name__)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class RunningComponent:
    spec: ComponentSpec
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


def check_ports_free(ports: Iterable[tuple[str, str, int]]) -> None:
    """Raise naming the first component whose loopback port is already taken."""
    for name, host, port in ports:
        if not port_free(port, host):
            raise ComponentError(
                f"{name}: port {host}:{port} is already in use",
                hint="stop what listens there (`stackyard down` if it is an earlier "
                "Stackyard), or choose another port with the matching `stackyard up` option",
            )


class ProcessSupervisor:
    """Starts components from their specs and owns their processes until ``stop``.

    With ``watch``, a component that exits on its own is started again (Caddy comes back
    empty; the deploy controller puts the routes back from its own state).
    """

    def __init__(self) -> None:
        self.running: list[RunningComponent] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def watch(
        self, *, timeout: float, on_restart: Callable[[RunningComponent], None], every: float = 0.5
    ) -> None:
        """Restart components that exit while the platform runs."""
        self._watcher = threading.Thread(
            target=self._watch, args=(timeout, on_restart, every), name="supervisor", daemon=True
        )
        self._watcher.start()

    def _watch(
        self, timeout: float, on_restart: Callable[[RunningComponent], None], every: float
    ) -> None:
        while not self._stopping.wait(every):
            for index, component in enumerate(list(self.running)):
                code = component.process.poll()
                if code is None or self._stopping.is_set():
                    continue
                log.warning(
                    "%s exited with status %s; starting it again", component.spec.name, code
                )
                component.log.close()
                try:
                    fresh = self._spawn(component.spec)
                    self.running[index] = fresh
                    self._wait_ready(fresh, timeout)
                except ComponentError as exc:
                    log.error("%s did not come back: %s", component.spec.name, exc)
                    continue
                on_restart(fresh)

    def start(self, specs: list[ComponentSpec], *, timeout: float) -> None:
        """Start every spec at once, then wait for all to be ready; stop all on failure."""
        try:
            for spec in specs:
                self.running.append(self._spawn(spec))
            with ThreadPoolExecutor(max_workers=max(1, len(self.running))) as pool:
                list(pool.map(lambda c: self._wait_ready(c, timeout), self.running))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, spec: ComponentSpec) -> RunningComponent:
        for path, content in spec.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            path.chmod(0o600)
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = spec.log_file.open("ab")
        env = {**os.environ, **spec.env}
        for value in spec.env.values():
            os.makedirs(value, exist_ok=True)
        try:
            process = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as exc:
            log.close()
            raise ComponentError(
                f"{spec.name}: `{spec.argv[0]}` was not found", hint=spec.install_hint
            ) from exc
        return RunningComponent(spec, process, log)

    def _wait_ready(self, component: RunningComponent, timeout: float) -> None:
        spec = component.spec
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                code = component.process.poll()
                if code is not None:
                    raise ComponentError(
                        f"{spec.name} exited with status {code} while starting; "
                        f"last lines of {spec.log_file}:\n{tail(spec.log_file)}",
                        hint=spec.install_hint,
                    )
                try:
                    status = client.get(spec.ready_url).status_code
                except httpx.TransportError as exc:
                    last_error = str(exc) or type(exc).__name__
                else:
                    if status in spec.ready_statuses:
                        return
                    last_error = f"HTTP {status}"
                time.sleep(0.02)
        raise ComponentError(
            f"{spec.name} did not answer at {spec.ready_url} within {timeout:.0f} s "
            f"({last_error}); its log is {spec.log_file}",
            hint=spec.install_hint,
        )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every child, then SIGKILL what is left after ``grace`` seconds."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=grace)
        for component in self.running:
            with contextlib.suppress(ProcessLookupError):
                component.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for component in self.running:
            try:
                component.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                component.process.kill()
                component.process.wait()
            component.log.close()
            if component.spec.container_name:
                subprocess.run(
                    ["docker", "rm", "-f", component.spec.container_name],
                    capture_output=True,
                    check=False,
                )
        self.running.clear()

    def pids(self) -> dict[str, int]:
        return {c.spec.name: c.pid for c in self.running}


def tail(path: os.PathLike[str] | str, lines: int = 10) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
