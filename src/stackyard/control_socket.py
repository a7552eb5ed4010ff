"""A private control channel over a unix socket: one JSON request line, one JSON answer line.

The data plane's keeper (platform/keeper.py) serves it, mode 0600 in the data directory;
the control plane (the router's upstream table, the registry's mode, the keeper's status)
asks it. Only the socket's owner can connect, and nothing listens on TCP, so a task on the
host's network cannot reach it. Standard library only, so that any layer may import it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stackyard.errors import (
    ComponentError,
    NotFoundError,
    RetryableError,
    StackyardError,
    UsageError,
)

Message = dict[str, Any]
Handler = Callable[[Message], Message]
MAX_LINE = 1 << 20  # a request or an answer; the upstream table is far smaller
# sun_path is 108 bytes on Linux, with the terminating NUL.
MAX_SOCKET_PATH = 107

log = logging.getLogger(__name__)


def check_socket_path(path: Path) -> None:
    """UsageError when ``path`` is too long to be a unix socket's address."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise UsageError(
            f"{path}: {size} bytes is too long for a unix socket (at most {MAX_SOCKET_PATH})",
            hint="choose a shorter data directory with --data-dir or STACKYARD_DATA_DIR",
        )


def ask(path: Path, request: Message, *, timeout: float = 10.0) -> Message:
    """Send one request and return the answer; its ``error`` becomes a StackyardError.

    A socket that is missing or refuses the connection is a RetryableError (the keeper may
    be restarting); an answer that is not JSON is a ComponentError.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = _read_line(sock)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise RetryableError(
            f"nothing answers on {path}: {exc.strerror or exc}",
            hint="start the platform with `stackyard up`; it starts the data plane",
        ) from exc
    except PermissionError as exc:
        raise ComponentError(
            f"{path}: permission denied", hint="run the command as the platform's user"
        ) from exc
    except OSError as exc:
        raise RetryableError(f"{path}: {exc}", hint="the data plane may be restarting") from exc
    try:
        message = json.loads(answer)
    except ValueError as exc:
        raise ComponentError(f"{path} answered something that is not JSON: {answer!r}") from exc
    if not isinstance(message, dict):
        raise ComponentError(f"{path} answered {message!r}, not an object")
    if "error" in message:
        raise _error_of(message)
    return message


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the connection closed before a full answer")
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)
        if size > MAX_LINE:
            raise OSError(f"answer longer than {MAX_LINE} bytes")


# The error classes an answer can carry, by name; anything else arrives as a ComponentError.
_KINDS: dict[str, type[StackyardError]] = {
    "usage": UsageError,
    "not_found": NotFoundError,
    "retryable": RetryableError,
    "component": ComponentError,
}


def _error_of(message: Message) -> StackyardError:
    kind = _KINDS.get(str(message.get("kind")), ComponentError)
    return kind(str(message["error"]), hint=message.get("hint") or None)


def error_message(exc: BaseException) -> Message:
    """The answer that carries ``exc`` back to the asker (see ``ask``)."""
    if isinstance(exc, StackyardError):
        kind = next((k for k, cls in _KINDS.items() if isinstance(exc, cls)), "component")
        return {"error": exc.message, "hint": exc.hint, "kind": kind}
    return {"error": f"{type(exc).__name__}: {exc}", "kind": "component"}


class ControlServer:
    """Serves ``handlers`` by the request's ``op`` on a unix socket made with mode 0600.

    Each connection is one request and one answer, on its own thread, so a slow operation
    (a registry restart) does not hold up a quick one (an upstream change).
    """

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        check_socket_path(path)
        self.path = path
        self._handlers = dict(handlers)
        serve = self._serve

        class Connection(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_LINE)
                with contextlib.suppress(OSError):
                    self.wfile.write(json.dumps(serve(line)).encode() + b"\n")

        path.unlink(missing_ok=True)
        self._server = socketserver.ThreadingUnixStreamServer(
            str(path), Connection, bind_and_activate=False
        )
        self._server.daemon_threads = True
        previous = os.umask(0o177)  # the socket exists with mode 0600 from its first instant
        try:
            self._server.server_bind()
        finally:
            os.umask(previous)
        path.chmod(0o600)
        self._server.server_activate()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control-socket", daemon=True
        )
        self._thread.start()

    def _serve(self, line: bytes) -> Message:
        try:
            request = json.loads(line)
            op = request.get("op") if isinstance(request, dict) else None
            handler = self._handlers.get(str(op))
            if handler is None:
                raise UsageError(
                    f"unknown operation {op!r}", hint=f"one of: {', '.join(self._handlers)}"
                )
            return handler(request)
        except Exception as exc:  # every failure goes back to the asker, none ends the server
            if not isinstance(exc, StackyardError):
                log.exception("control request %r failed", line[:200])
            return error_message(exc)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)
