"""The keeper's control channel over a real unix socket in a temporary directory."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackyard.control_socket import ControlServer, Message, ask, check_socket_path
from stackyard.errors import ComponentError, NotFoundError, RetryableError, UsageError


def missing(request: Message) -> Message:
    raise NotFoundError(f"no route {request['route']}", hint="create it first")


def broken(_request: Message) -> Message:
    raise KeyError("boom")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    handlers = {"echo": lambda request: {"got": request}, "missing": missing, "broken": broken}
    found = ControlServer(tmp_path / "control.sock", handlers)
    try:
        yield found
    finally:
        found.close()


def test_a_request_gets_its_answer_and_only_the_owner_may_connect(
    server: ControlServer,
) -> None:
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert ask(server.path, {"op": "echo", "x": [1, 2]}) == {"got": {"op": "echo", "x": [1, 2]}}


def test_errors_come_back_with_their_kind_and_hint(server: ControlServer) -> None:
    with pytest.raises(NotFoundError, match="no route hello-dev") as caught:
        ask(server.path, {"op": "missing", "route": "hello-dev"})
    assert caught.value.hint == "create it first"
    with pytest.raises(UsageError, match="unknown operation 'nope'"):
        ask(server.path, {"op": "nope"})
    with pytest.raises(ComponentError, match="KeyError"):
        ask(server.path, {"op": "broken"})
    # The server outlived each failure.
    assert ask(server.path, {"op": "echo"}) == {"got": {"op": "echo"}}


def test_garbage_gets_an_error_not_a_dead_server(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server.path))
        sock.sendall(b"not json\n")
        answer = json.loads(sock.makefile().readline())
    assert answer["kind"] == "component"
    assert ask(server.path, {"op": "echo"}) == {"got": {"op": "echo"}}


def test_nothing_listening_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(RetryableError, match="nothing answers on") as caught:
        ask(tmp_path / "absent.sock", {"op": "echo"})
    assert "stackyard up" in (caught.value.hint or "")


def test_a_socket_path_too_long_is_named(tmp_path: Path) -> None:
    long = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(UsageError, match="too long for a unix socket") as caught:
        check_socket_path(long)
    assert "--data-dir" in (caught.value.hint or "")
