"""The build proxy answers a request it cannot serve with a message, never in silence.

A connection closed without an answer reads as "Remote end closed connection without
response" to the build's docker client, which says nothing of the cause.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
from stackyard.images.dockerproxy.server import BuildProxy
from stackyard.registry_login import RegistryLogin


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("docker", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(self.path))


def test_an_engine_that_cannot_be_reached_is_named_in_the_answer(tmp_path: Path) -> None:
    missing = tmp_path / "no-engine.sock"
    proxy = BuildProxy(str(missing))
    login = RegistryLogin("127.0.0.1:5999", "u", "p")
    opened = proxy.open(BuildScope("hello", "127.0.0.1:5999", login, BuildLimits(pids=64)))
    connection = UnixConnection(opened.path)
    try:
        connection.request("GET", "/v1.41/version")
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 502
        assert response.getheader("connection") == "close"
        assert body["message"].startswith("Stackyard's build proxy failed: ")
        assert str(missing) in body["message"]
    finally:
        connection.close()
        opened.close()
        proxy.close()


def test_a_socket_for_no_build_yet_refuses_everything_until_claimed(tmp_path: Path) -> None:
    missing = tmp_path / "no-engine.sock"  # a request let through would name it (502)
    proxy = BuildProxy(str(missing))
    login = RegistryLogin("127.0.0.1:5999", "u", "p")
    opened = proxy.open(BuildScope("", None), claimed=False)
    try:
        for method, target in (("GET", "/v1.41/version"), ("POST", "/v1.41/containers/create")):
            connection = UnixConnection(opened.path)
            connection.request(method, target)
            response = connection.getresponse()
            body = json.loads(response.read())
            connection.close()
            assert response.status == 503
            assert "serves no build yet" in body["message"]
        opened.nest_builds_in("/docker/abc")
        opened.claim(BuildScope("hello", "127.0.0.1:5999", login))
        assert opened.scope.stack == "hello"
        assert opened.scope.cgroup_parent == "/docker/abc"  # kept from before the claim
        connection = UnixConnection(opened.path)
        connection.request("GET", "/v1.41/version")
        response = connection.getresponse()
        response.read()
        connection.close()
        assert response.status == 502  # let through now: to an engine that is not there
    finally:
        opened.close()
        proxy.close()
