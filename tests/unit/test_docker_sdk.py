"""The Docker SDK's unix-socket connect closes its socket when the engine refuses it
(docker/docker-py#3356, fixed in stackyard/docker_sdk.py)."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

import pytest

from stackyard.engines.docker import DockerEngine
from stackyard.errors import StackyardError


@pytest.fixture
def dead_engine(tmp_path: Path) -> str:
    """A socket file nobody listens on: a dockerd that died, its socket left behind."""
    path = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()
    return f"unix://{path}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_refused_connects_to_a_dead_engine_leave_no_socket_open(dead_engine: str) -> None:
    engine = DockerEngine(dead_engine)
    gc.collect()
    gc.disable()  # a leaked socket lives until a collection: none runs meanwhile
    try:
        before = open_fds()
        for _ in range(20):  # a task watch asks again every few seconds while it is away
            with pytest.raises(StackyardError, match=r"did not answer"):
                engine.ping()
        leaked = open_fds() - before
    finally:
        gc.enable()
        engine.close()
    assert leaked == 0
