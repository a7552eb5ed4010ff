"""Tiny app backends for router tests: ``http.server`` threads on free 127.0.0.1 ports
that answer their name (``/slow`` after 1.5 s, ``/status/<code>`` with that status).
The ``backend`` fixture (conftest.py) starts them and stops them all at the end of a
test."""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _handler_for(name: str) -> type[BaseHTTPRequestHandler]:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow":
                time.sleep(1.5)
            body = name.encode()
            status = self.path.partition("?")[0].removeprefix("/status/")  # /status/404: 404
            self.send_response(int(status) if status.isdigit() else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Answer


class _Server(ThreadingHTTPServer):
    # wrk through two Caddies has up to 32 upstream connections opening at once (this
    # server closes each after its answer). socketserver's default backlog of 5 overflowed
    # when the test process was slow to accept: the SYN dropped, retried after 1 s and
    # 3 s, ran into Caddy's 3 s dial timeout, and wrk saw a 502.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that left before its answer (a load run stopped, a proxy that gave up)
        is no error of the backend's; anything else is printed as before."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class Backend:
    def __init__(self, name: str) -> None:
        self.server = _Server(("127.0.0.1", 0), _handler_for(name))
        self.dial = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
