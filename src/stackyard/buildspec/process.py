"""Run one command's shell as a process of this host: own process group, streamed output,
timeout. The runner decides what to run (script, environment, user); the local command
shell (shell.py) carries it out here.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

TIMED_OUT_STATUS = 124
# How long output from background children is still read after the shell itself exited.
_LINGER_SECONDS = 0.1


@dataclass(frozen=True)
class Account:
    """The Linux user (and its primary group) a command runs as."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Command:
    """One command to run: the script ``shell -c`` gets, and where and how it runs."""

    script: str
    shell: str  # the shell's path where the command runs
    env: dict[str, str]
    cwd: str
    timeout: float
    kill_grace: float = 5.0
    account: Account | None = None


@dataclass(frozen=True)
class CommandOutcome:
    """How the shell ended: its exit status (128+n for signal n), timeout, or failure to
    start; and the state its EXIT trap dumped (None: it dumped none)."""

    status: int
    timed_out: bool = False
    start_error: str | None = None
    group: int | None = None
    state: bytes | None = None
    exports: str | None = None


def run_process(request: Command, on_output: Callable[[str], None]) -> CommandOutcome:
    """Start the shell in a new session, stream its merged stdout/stderr, enforce the timeout."""
    try:
        proc = _start(request)
    except OSError as exc:
        return CommandOutcome(status=127, start_error=f"could not start the command: {exc}")
    with proc:
        timed_out = _pump(proc, request, on_output)
        status = proc.wait()
    if timed_out:
        return CommandOutcome(status=TIMED_OUT_STATUS, timed_out=True, group=proc.pid)
    return CommandOutcome(status=128 - status if status < 0 else status, group=proc.pid)


def _start(request: Command) -> subprocess.Popen[bytes]:
    account = request.account
    return subprocess.Popen(
        [request.shell, "-c", request.script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=request.env,
        cwd=request.cwd,
        start_new_session=True,
        user=account.uid if account else None,
        group=account.gid if account else None,
        extra_groups=[] if account else None,
    )


def _pump(
    proc: subprocess.Popen[bytes], request: Command, on_output: Callable[[str], None]
) -> bool:
    """Copy output until EOF; return True when the timeout killed the process group."""
    if proc.stdout is None:
        raise RuntimeError("the command's output pipe was not opened")
    fd = proc.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    deadline = time.monotonic() + request.timeout
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if now >= deadline:
                kill_group(proc, request.kill_grace)
                return True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _LINGER_SECONDS:
                break
            if selector.select(timeout=min(deadline - now, 0.05 if exited_at else 0.5)):
                data = os.read(fd, 65536)
                if not data:
                    break
                on_output(decoder.decode(data))
    on_output(decoder.decode(b"", final=True))
    return False


def kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the command's whole process group, then SIGKILL it after ``grace`` seconds."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _signal_group(proc.pid, signal.SIGKILL)


def stop_leftover_group(group: int) -> bool:
    """SIGTERM a finished command's process group if background processes remain in it."""
    return _signal_group(group, signal.SIGTERM)


def _signal_group(group: int, signum: signal.Signals) -> bool:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True
