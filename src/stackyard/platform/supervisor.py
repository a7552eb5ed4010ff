"""Run the data plane's component processes detached, adopt them by pid, stop them by pid.

A component is started in its own session with no death signal: it outlives whoever
started it (the keeper, and the control plane above it). A later keeper re-adopts it by
the pid it recorded, after checking that the pid still runs that component's command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stackyard.errors import ComponentError
from stackyard.platform.components import ComponentSpec
from stackyard.platform.state import pid_alive, wait_gone
from stackyard.ports import port_free
from stackyard.router.caddy import UnixSocketTransport

log = logging.getLogger(__name__)
READY_POLL = 0.02


@dataclass
class Kept:
    """One running component: its spec and pid, and its process when this keeper made it."""

    spec: ComponentSpec
    pid: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    adopted: bool = False

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid) and runs_command_of(self.pid, self.spec)

    def exit_status(self) -> int | None:
        return self.process.returncode if self.process is not None else None


def check_ports_free(ports: Iterable[tuple[str, str, int]]) -> None:
    """Raise naming the first component whose loopback port is already taken."""
    for name, host, port in ports:
        if not port_free(port, host):
            raise ComponentError(
                f"{name}: port {host}:{port} is already in use",
                hint="stop what listens there (`stackyard down --all` if it is an earlier "
                "Stackyard), or choose another port with the matching `stackyard up` option",
            )


def marker_of(spec: ComponentSpec) -> str:
    """What a component's command line always names: its config file in the data dir."""
    return str(next(iter(spec.files), spec.argv[0]))


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def runs_command_of(pid: int, spec: ComponentSpec) -> bool:
    """True when ``pid`` runs this component (a reused pid runs something else)."""
    return marker_of(spec).encode() in cmdline(pid)


def write_files(spec: ComponentSpec) -> None:
    """Write the component's files (each replaced at once, mode 0600); make its log's folder."""
    for path, content in spec.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(path)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)


def spawn(spec: ComponentSpec) -> Kept:
    """Start ``spec`` detached: its own session, no death signal, its log in the data dir."""
    write_files(spec)
    for value in spec.env.values():
        os.makedirs(value, mode=0o700, exist_ok=True)
    with spec.log_file.open("ab") as log_handle:
        try:
            process = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **spec.env},
                start_new_session=True,  # no Ctrl-C from a terminal, no death with a parent
                umask=0o077,  # what it creates (its admin socket, its state) is its own
            )
        except FileNotFoundError as exc:
            raise ComponentError(
                f"{spec.name}: `{spec.argv[0]}` was not found", hint=spec.install_hint
            ) from exc
    return Kept(spec, process.pid, process)


def answers(spec: ComponentSpec, *, timeout: float = 1.0) -> str | None:
    """None when the component answers its readiness check, else what went wrong."""
    transport = UnixSocketTransport(spec.ready_socket, timeout) if spec.ready_socket else None
    try:
        with httpx.Client(timeout=timeout, transport=transport, trust_env=False) as client:
            status = client.get(spec.ready_url).status_code
    except httpx.TransportError as exc:
        return str(exc) or type(exc).__name__
    return None if status in spec.ready_statuses else f"HTTP {status}"


def wait_ready(kept: Kept, timeout: float) -> None:
    """Wait until the component answers; ComponentError (with its log) if it exits or
    does not answer in time."""
    spec = kept.spec
    deadline = time.monotonic() + timeout
    problem: str | None = "no answer yet"
    while time.monotonic() < deadline:
        if not kept.alive():
            code = kept.exit_status()
            raise ComponentError(
                f"{spec.name} exited with status {code} while starting; "
                f"last lines of {spec.log_file}:\n{tail(spec.log_file)}",
                hint=spec.install_hint,
            )
        problem = answers(spec)
        if problem is None:
            if spec.ready_socket is not None:
                # Made under umask 077 (mode 0700); only write access matters for a socket,
                # and 0600 says plainly that only its owner may use it.
                with contextlib.suppress(OSError):
                    spec.ready_socket.chmod(0o600)
            return
        time.sleep(READY_POLL)
    where = f"{spec.ready_url} over {spec.ready_socket}" if spec.ready_socket else spec.ready_url
    raise ComponentError(
        f"{spec.name} did not answer at {where} within {timeout:.0f} s ({problem}); "
        f"its log is {spec.log_file}",
        hint=spec.install_hint,
    )


def stop(kept: Kept, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; by pid, whoever started it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(kept.pid, signal.SIGTERM)
    if kept.process is not None:
        try:
            kept.process.wait(grace)
        except subprocess.TimeoutExpired:
            kept.process.kill()
            kept.process.wait()
    elif wait_gone([kept.pid], grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(kept.pid, signal.SIGKILL)
        wait_gone([kept.pid], 5.0)
    if kept.spec.container_name:
        subprocess.run(
            ["docker", "rm", "-f", kept.spec.container_name],
            capture_output=True,
            check=False,
        )


def run_once(spec: ComponentSpec, *, timeout: float) -> str:
    """Run a one-shot command of a component (its files written first); its output is
    appended to the component's log and returned."""
    write_files(spec)
    try:
        result = subprocess.run(
            spec.argv, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise ComponentError(
            f"{spec.name}: `{spec.argv[0]}` was not found", hint=spec.install_hint
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ComponentError(f"{spec.name} did not finish within {timeout:.0f} s") from exc
    output = result.stdout + result.stderr
    with spec.log_file.open("a", encoding="utf-8") as handle:
        handle.write(output)
    if result.returncode != 0:
        raise ComponentError(
            f"{spec.name} exited with status {result.returncode}: "
            + "\n".join(output.strip().splitlines()[-5:]),
            hint=f"see {spec.log_file}",
        )
    return output


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
