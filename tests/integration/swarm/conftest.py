"""The multi-node test swarm, made once per test session: three extra Docker daemons.

``scripts/setup-host --swarm-nodes 3`` starts them (n1 the manager, n2 and n3 workers, each
with its own sockets, roots and containerd namespace, advertising 127.0.0.2, .3 and .4) and
labels each node with its address. The shared main engine never joins. At the end of the
session the fixture stops the nodes it started, by the pids their pid files name (through
``--swarm-nodes 0``); a swarm that was already there before the session is left as it was.
Killing a node (``SwarmCluster.kill``) sends SIGKILL to its dockerd, its containerd, and the
shims and processes of its containers, as if the machine died; ``restore`` starts it again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

ROOT = Path(__file__).resolve().parents[3]
SETUP_HOST = ROOT / "scripts" / "setup-host"
SWARM_DIR = Path("/run/stackyard-swarm")
NODES = 3


@dataclass(frozen=True)
class SwarmNode:
    name: str  # n1, n2, ...
    number: int
    socket: str  # unix:///run/stackyard-swarm/nK.sock
    address: str  # 127.0.0.(K+1)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.socket, timeout=60)

    def node_id(self) -> str:
        client = self.client()
        try:
            return str(client.info()["Swarm"]["NodeID"])
        finally:
            client.close()

    def pid(self) -> int | None:
        try:
            return int((SWARM_DIR / f"{self.name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def swarm_node(number: int) -> SwarmNode:
    return SwarmNode(
        name=f"n{number}",
        number=number,
        socket=f"unix://{SWARM_DIR}/n{number}.sock",
        address=f"127.0.0.{number + 1}",
    )


def setup_host(nodes: int) -> None:
    result = subprocess.run(
        [str(SETUP_HOST), "--swarm-nodes", str(nodes)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/setup-host --swarm-nodes {nodes} failed:\n{result.stderr}")


def answers(node: SwarmNode) -> bool:
    """Whether the node's daemon answers a ping. Asked over a plain socket: the Docker SDK's
    client asks the daemon for its API version while it is made, and when nothing answers it
    leaves its socket open (a ResourceWarning, an error under ``filterwarnings = error``)."""
    path = node.socket.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


@dataclass
class SwarmCluster:
    """The test swarm: ``nodes`` by name, the manager's socket as the engine endpoint."""

    nodes: dict[str, SwarmNode]

    @property
    def manager(self) -> SwarmNode:
        return self.nodes["n1"]

    @property
    def endpoint(self) -> str:
        return self.manager.socket

    def node_ids(self) -> dict[str, str]:
        """node name (n1...) -> Swarm node id."""
        return {name: node.node_id() for name, node in self.nodes.items()}

    def kill(self, name: str) -> float:
        """SIGKILL the node's dockerd, containerd, container shims and container processes,
        all at once, as a machine that dies. Returns the monotonic time of the kill."""
        node = self.nodes[name]
        client = node.client()
        try:
            container_pids = [
                int(c.attrs["State"]["Pid"]) for c in client.containers.list() if c.attrs
            ]
        finally:
            client.close()
        daemon = node.pid()
        if daemon is None:
            raise AssertionError(f"swarm node {name} has no pid file")
        children = _pgrep("-P", str(daemon))
        shims = _pgrep("-f", f"-namespace sy-{name} ")
        killed_at = time.monotonic()
        for pid in [daemon, *children, *shims, *container_pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        return killed_at

    def restore(self) -> None:
        """Start every node that is not running again (a killed one rejoins the swarm)."""
        setup_host(len(self.nodes))

    def scale(self, nodes: int) -> None:
        """Add nodes (n4, ...) or remove the ones beyond ``nodes``."""
        setup_host(nodes)
        self.nodes = {f"n{n}": swarm_node(n) for n in range(1, nodes + 1)}


def _pgrep(*args: str) -> list[int]:
    found = subprocess.run(["pgrep", *args], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[SwarmCluster]:
    if os.geteuid() != 0:
        pytest.fail("the swarm tests start Docker daemons: run them as root (scripts/test does)")
    there_before = answers(swarm_node(1))
    setup_host(NODES)
    cluster = SwarmCluster({f"n{n}": swarm_node(n) for n in range(1, NODES + 1)})
    try:
        yield cluster
    finally:
        if not there_before:
            setup_host(0)
        elif len(cluster.nodes) != NODES:
            setup_host(NODES)


@pytest.fixture(autouse=True)
def nodes_answer(request: pytest.FixtureRequest) -> None:
    """Before each test of the swarm, start again a node that died. Docker 20.10's swarm
    manager can panic in swarmkit's orchestrator while a service is removed (a nil
    dereference in ``SetServiceTasksRemove``, moby/swarmkit#3216, fixed after the Debian
    package's version). The platform's own removals wait for Swarm's reaper, which closes
    the window they opened (stackyard/engines/swarm.py, ``_wait_reaped``); a removal by
    anyone else may still hit it, and one crash should fail at most the test it happened
    in, not every test after it. A node that a test kills on purpose, the test restores
    itself."""
    if "swarm_cluster" not in request.fixturenames:
        return
    cluster: SwarmCluster = request.getfixturevalue("swarm_cluster")
    dead = [name for name, node in cluster.nodes.items() if not answers(node)]
    if dead:
        sys.stderr.write(f"swarm node(s) {', '.join(dead)} did not answer: starting them again\n")
        cluster.restore()
