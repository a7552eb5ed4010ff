"""Real receivers on the loopback for notification tests: an HTTP server standing in for
Slack, Discord and a generic webhook, and an SMTP sink (aiosmtpd).

Each starts on a free port of 127.0.0.1, is told how to answer (fail the next tries, refuse,
ask to wait, hold every request until released), records what it got, and stops what it
started when the test ends.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Script:
    """How the receiver answers the next requests."""

    fail_next: int = 0  # answered with fail_status, then the normal answer
    fail_status: int = 503
    status: int = 200  # the normal answer (Discord's is 204)
    body: bytes = b"ok"
    retry_after: str = ""  # sent with 429
    hold: threading.Event = field(default_factory=threading.Event)  # set: answer at once
    holding: threading.Event = field(default_factory=threading.Event)  # a request waits


class HttpReceiver:
    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []
        self.script = Script()
        self.script.hold.set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                script = receiver.script
                if not script.hold.is_set():
                    script.holding.set()
                    script.hold.wait(timeout=60)
                status, reply, headers = receiver._answer()
                with receiver._changed:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    receiver.answers.append(status)
                    receiver._changed.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self) -> tuple[int, bytes, dict[str, str]]:
        script = self.script
        with self._lock:
            if script.fail_next > 0:
                script.fail_next -= 1
                headers = {"Retry-After": script.retry_after} if script.retry_after else {}
                return script.fail_status, b"temporarily unavailable", headers
        return script.status, b"" if script.status == 204 else script.body, {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` requests, once they have all arrived."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} of {count} requests after {timeout} s")
            return list(self.received[:count])

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.script.hold.set()
        # shutdown() waits for serve_forever to end, forever if it is not running: a CI
        # run once hung here with the server's thread gone (cause not found), so only a
        # running server is asked.
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


def http_receiver() -> Iterator[HttpReceiver]:
    """A pytest fixture body: a started receiver, stopped after the test."""
    receiver = HttpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """An SMTP server on the loopback that keeps every mail; with ``login``, it offers AUTH
    over plain SMTP (allowed here, as it is on the loopback) and checks the password."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []
        self.logins: list[str] = []
        self._changed = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mail = message_from_bytes(envelope.content, policy=policy.default)
                with sink._changed:
                    sink.mails.append((envelope.mail_from, list(envelope.rcpt_tos), mail))  # type: ignore[arg-type]
                    sink._changed.notify_all()
                return "250 OK"

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            if login is None or not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            user, password = data.login.decode(), data.password.decode()
            sink.logins.append(user)
            return AuthResult(success=(user, password) == login, handled=False)

        self.port = free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate if login else None,
            auth_require_tls=False,
        )

    def wait_for(
        self, count: int, timeout: float = 30.0
    ) -> list[tuple[str, list[str], EmailMessage]]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.mails) >= count, timeout):
                raise AssertionError(f"{len(self.mails)} of {count} mails after {timeout} s")
            return list(self.mails[:count])

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Wait until ``check()`` holds; an AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")
