"""Engine endpoints that do not answer: a real TCP listener that accepts and never says a
word, an address where nothing listens (connection refused), and a Docker API that answers
its ping (and version, and info as a swarm manager's) and then never answers a listing
(or answers the listings a test gives it, until the test takes one away).

The listener binds a loopback address other than 127.0.0.1 (still 127.0.0.0/8) so that
nothing else of the test run is there. It keeps every connection it accepts open, reading
nothing, until it stops: a client then waits for its read timeout. Stopped by its own
thread's join (tests/integration/accepting.py); the connections it holds are closed.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


# What the ping-only engine answers, by the last part of the path (/v1.41/_ping -> _ping).
_PING_ANSWERS = {
    "_ping": "OK",
    "version": json.dumps({"ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10"}),
    "info": json.dumps({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}),
}
# Empty answers to the listings a task watch makes, and an event stream that ends at once
# (a swarm watch then lists every poll), for ``ping_only_endpoint(answers=…)``.
EMPTY_LISTINGS = {
    "containers/json": "[]",
    "nodes": "[]",
    "services": "[]",
    "tasks": "[]",
    "events": "",
}


@contextmanager
def ping_only_endpoint(
    host: str = MUTE_HOST, answers: dict[str, str] | None = None
) -> Iterator[str]:
    """``tcp://HOST:PORT`` of a Docker API that answers ``/_ping``, ``/version`` and
    ``/info`` (a swarm manager's), and holds every other request (``/containers/json``,
    ``/nodes``, ``/services``, ``/tasks``, an inspect, a POST, PUT or DELETE) without an answer
    until it stops: a client then waits for its read timeout. ``answers`` (by the path's
    end, ``tasks`` or ``containers/json``: from EMPTY_LISTINGS) are answered too, as long
    as they are in it: a test that deletes one makes the engine hang on it from then on.
    A key that starts with a method (``GET services/ID``) is answered to that method only.
    Its threads end when the context does."""
    stopping = threading.Event()
    answers = {} if answers is None else answers

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            answer = _PING_ANSWERS.get(path.rsplit("/", 1)[-1])
            for end, listing in list(answers.items()):
                method, _, end = end.rpartition(" ")  # "GET services/ID": that method's only
                if answer is None and path.endswith(f"/{end}") and method in ("", self.command):
                    answer = listing
            if answer is None:
                stopping.wait(120)  # the client gives up first; the stop ends it
                self.close_connection = True
                return
            body = answer.encode()
            self.send_response(200)
            kind = "text/plain" if answer == "OK" else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        # A stop (POST /containers/…/stop), a create, a remove (DELETE) hang too.
        do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ping-only", daemon=True)
    thread.start()
    try:
        yield f"tcp://{host}:{server.server_address[1]}"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
