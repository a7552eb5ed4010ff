"""A plain Docker engine of a test's own: one more dockerd, started and stopped by its pid.

Started like ``scripts/setup-host`` starts the swarm's nodes: its own data root (in the
test's temporary directory), exec root, socket, pid file and containerd namespace, with
``--bridge=none --iptables=false`` so that it changes nothing in the host's network (its
tasks use host networking, on this machine's loopback, like the main engine's). It never
joins the shared test swarm. It has no images: its tasks pull theirs from a registry.
At the end the daemon gets SIGTERM (it stops its containers and its containerd), SIGKILL
for its whole process group if it does not exit within 30 s; mounts it left behind are
unmounted and its exec root is removed. Start-up is bounded (60 s).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.integration.conftest import require

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class ExtraEngine:
    name: str
    socket_path: Path
    pid: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.endpoint, timeout=60)


def answers(path: Path) -> bool:
    """Whether a daemon answers ``GET /_ping`` on the socket (a plain socket: the SDK's
    client leaves its socket open when nothing answers while it is made)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(path))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = conn.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply


@contextmanager
def extra_engine(name: str, root: Path) -> Iterator[ExtraEngine]:
    """A dockerd named ``name`` with its data under ``root``, stopped when the context ends."""
    require("dockerd")
    root.mkdir(parents=True, exist_ok=True)
    # A short exec root: containerd's sockets live under it (a unix socket path is short).
    exec_root = Path(tempfile.mkdtemp(prefix=f"sy-{name}-"))
    socket_path = root / "docker.sock"
    namespace = f"sy-test-{name}-{secrets.token_hex(3)}"
    log = root / "dockerd.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(exec_root),
             "-H", f"unix://{socket_path}", "--pidfile", str(exec_root / "dockerd.pid"),
             "--bridge=none", "--iptables=false", "--ip-masq=false",
             "--containerd-namespace", namespace,
             "--containerd-plugins-namespace", f"{namespace}-plugins"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(socket_path):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"dockerd {name} did not start; its log ends:\n{tail}")
            time.sleep(0.2)
        yield ExtraEngine(name, socket_path, process.pid, log)
    finally:
        _stop(process)
        for mount in _mounts_under(root, exec_root):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        shutil.rmtree(exec_root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: dockerd, containerd
            process.wait(timeout=STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):  # a containerd it left, in its group
        os.killpg(process.pid, signal.SIGKILL)


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points under ``roots``, deepest first."""
    prefixes = tuple(f"{root}/" for root in roots)
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(prefixes) or point in {str(root) for root in roots}:
            points.append(point)
    return sorted(points, key=len, reverse=True)
