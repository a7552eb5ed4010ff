"""The CLI's HTTP client against a real HTTP server on loopback (the standard library's).

It reuses one kept-alive connection, reconnects when the server has closed it, maps error
answers to Stackyard errors, and reads server-sent events until the stream ends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import pytest

from stackyard.cli.client import ApiClient
from stackyard.cli.follow import follow_events
from stackyard.errors import (
    AccessDenied,
    ComponentError,
    NotFoundError,
    OperationFailed,
    RetryableError,
    StackyardError,
    UsageError,
)


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn answers
    seen: ClassVar[list[dict[str, Any]]] = []
    connections: ClassVar[set[tuple[str, int]]] = set()

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any, *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        if close:
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        Api.connections.add(self.client_address)
        Api.seen.append(
            {
                "method": method,
                "path": url.path,
                "query": dict(parse_qsl(url.query)),
                "body": body,
                "auth": self.headers.get("Authorization"),
            }
        )
        if url.path == "/events":
            self._events()
        elif url.path == "/missing":
            self._answer(404, {"error": "no stack 'nope'", "hint": "stackyard stacks"})
        elif url.path == "/refused":
            self._answer(401, {"error": "bad token"})
        elif url.path == "/forbidden":
            self._answer(403, {"error": "forbidden: this takes deploy", "permission": "deploy"})
        elif url.path == "/slow-down":
            self._answer(429, {"detail": "too many wrong tokens"})
        elif url.path == "/bad":
            self._answer(400, {"error": "stage 'qa' is not in stackyard.yml"})
        elif url.path == "/failed":
            self._answer(409, {"error": "release of shop prod failed: release.yml exited 1"})
        elif url.path == "/broken":
            self._answer(500, {"error": "boom"})
        elif url.path == "/closing":
            self._answer(200, {"ok": True}, close=True)
        else:
            self._answer(200, {"echo": body, "path": url.path})

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in (
            'event: line\ndata: "one"\n\n',
            ": keep-alive\n\n",
            'event: line\ndata: "two [bold]"\n\n',
            'event: end\ndata: ""\n\n',
        ):
            data = chunk.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


@pytest.fixture
def api() -> Iterator[str]:
    Api.seen, Api.connections = [], set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_json_in_and_out_with_the_token_over_one_connection(api: str) -> None:
    client = ApiClient(api, "secret-token")
    try:
        answer = client.request("POST", "/api/v1/stacks/hello/builds", json={"ref": None})
        listing = client.get("/api/v1/stacks", params={"stage": "dev", "build": True, "x": None})
    finally:
        client.close()
    assert answer == {"echo": {"ref": None}, "path": "/api/v1/stacks/hello/builds"}
    assert listing["path"] == "/api/v1/stacks"
    assert [s["auth"] for s in Api.seen] == ["Bearer secret-token"] * 2
    assert Api.seen[1]["query"] == {"stage": "dev", "build": "true"}  # None is left out
    assert len(Api.connections) == 1  # kept alive: the second request reused it


def test_a_connection_the_server_closed_is_replaced(api: str) -> None:
    client = ApiClient(api, "t")
    try:
        client.get("/closing")
        assert client.get("/after") == {"echo": None, "path": "/after"}
    finally:
        client.close()
    assert len(Api.connections) == 2


@pytest.mark.parametrize(
    ("path", "error", "text"),
    [
        ("/missing", NotFoundError, "no stack 'nope'"),
        ("/refused", UsageError, "the API refused the token: bad token"),
        ("/forbidden", AccessDenied, "forbidden: this takes deploy"),
        ("/slow-down", RetryableError, "too many wrong tokens"),
        ("/bad", UsageError, "stage 'qa' is not in stackyard.yml"),
        ("/failed", OperationFailed, "release of shop prod failed: release.yml exited 1"),
        ("/broken", StackyardError, "the API failed (500): boom"),
    ],
)
def test_error_answers_become_stackyard_errors(
    api: str, path: str, error: type[StackyardError], text: str
) -> None:
    client = ApiClient(api, "t")
    with pytest.raises(error) as raised:
        client.get(path)
    client.close()
    assert raised.value.message == text


def test_the_hint_of_an_error_answer_is_kept(api: str) -> None:
    client = ApiClient(api, "t")
    with pytest.raises(NotFoundError) as raised:
        client.get("/missing")
    client.close()
    assert raised.value.hint == "stackyard stacks"


def test_no_server_is_a_component_error_naming_the_url() -> None:
    client = ApiClient("http://127.0.0.1:9", "t", timeout=2)
    with pytest.raises(ComponentError) as raised:
        client.get("/api/v1/status")
    assert "the API at http://127.0.0.1:9 did not answer" in raised.value.message


def test_following_events_prints_each_line_until_the_end(api: str) -> None:
    lines: list[str] = []
    follow_events(ApiClient(api, "t"), "/events", {"kind": "build"}, on_line=lines.append)
    assert lines == ["one", "two [bold]"]
    assert Api.seen[0]["query"] == {"kind": "build", "follow": "true"}
