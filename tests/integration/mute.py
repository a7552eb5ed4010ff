"""Engine endpoints that do not answer: a real TCP listener that accepts and never says a
word, and an address where nothing listens (connection refused).

The listener binds a loopback address other than 127.0.0.1 (still 127.0.0.0/8) so that
nothing else of the test run is there. It keeps every connection it accepts open, reading
nothing, until it stops: a client then waits for its read timeout. Stopped by its own
thread's join (tests/integration/accepting.py); the connections it holds are closed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tests.integration.accepting import stop_accepting

MUTE_HOST = "127.0.0.7"


@contextmanager
def mute_endpoint(host: str = MUTE_HOST) -> Iterator[str]:
    """``tcp://HOST:PORT`` of a listener that accepts and never answers."""
    listener = socket.create_server((host, 0), backlog=16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # stop_accepting shut the listener down
            held.append(conn)

    thread = threading.Thread(target=accept, name="mute-endpoint", daemon=True)
    thread.start()
    try:
        yield f"tcp://{host}:{listener.getsockname()[1]}"
    finally:
        stop_accepting(listener, thread)
        for conn in held:
            with suppress(OSError):
                conn.close()


def closed_endpoint(host: str = MUTE_HOST) -> str:
    """``tcp://HOST:PORT`` where nothing listens (a port just freed: refused at once)."""
    with socket.create_server((host, 0)) as probe:
        port = probe.getsockname()[1]
    return f"tcp://{host}:{port}"
