"""The caddy Router against a real Caddy started like `stackyard up` does, on loopback.

Backends are tiny ``http.server`` threads on free 127.0.0.1 ports that answer their name.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from stackyard.errors import ComponentError, RetryableError
from stackyard.platform.components import plan_caddy
from stackyard.platform.supervisor import ProcessSupervisor
from stackyard.plugins import load
from stackyard.router.base import Route
from stackyard.router.caddy import CaddyRouter
from stackyard.settings import Settings

from ..router_contract import RouterContract, free_port, port_route

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# Caddy -----------------------------------------------------------------------------------


def start_caddy(data_dir: Path, admin_port: int) -> ProcessSupervisor:
    binary = shutil.which("caddy")
    if binary is None:
        pytest.fail("caddy is not installed: run scripts/setup-host first")
    supervisor = ProcessSupervisor()
    settings = Settings(data_dir=data_dir, caddy_admin_port=admin_port)
    supervisor.start([plan_caddy(settings, binary=binary)], timeout=20)
    return supervisor


@pytest.fixture(scope="module")
def caddy_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin_port = free_port()
    supervisor = start_caddy(tmp_path_factory.mktemp("caddy"), admin_port)
    try:
        yield f"http://127.0.0.1:{admin_port}"
    finally:
        supervisor.stop()


@pytest.fixture(scope="module")
def host_port() -> int:
    return free_port()


class RecordingTransport(httpx.BaseTransport):
    """Counts the admin requests the router sends, then sends them for real."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def admin_log() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def router(
    caddy_admin: str, host_port: int, admin_log: RecordingTransport
) -> Iterator[CaddyRouter]:
    caddy = CaddyRouter(caddy_admin, host_port=host_port, transport=admin_log)
    try:
        yield caddy
    finally:
        for name in caddy.routes():
            caddy.remove_route(Route(name, port=1))
        caddy.close()


# Backends and traffic --------------------------------------------------------------------


def _handler_for(name: str) -> type[BaseHTTPRequestHandler]:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow":
                time.sleep(1.5)
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Answer


class Backend:
    def __init__(self, name: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(name))
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


@pytest.fixture
def backend() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def start(name: str) -> Backend:
        started.append(Backend(name))
        return started[-1]

    try:
        yield start
    finally:
        for each in started:
            each.stop()


@pytest.fixture
def web() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


# Tests -----------------------------------------------------------------------------------


class TestCaddyContract(RouterContract):
    pass


def test_registered_as_a_plugin() -> None:
    assert load("router", "caddy") is CaddyRouter


def serves(web: httpx.Client, url: str, text: str, within: float = 2.0) -> bool:
    """Whether ``url`` answers ``text`` within a few SRV refreshes."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if web.get(url).text == text:
            return True
        time.sleep(0.05)
    return False


def test_a_switch_changes_no_caddy_config(
    router: CaddyRouter,
    admin_log: RecordingTransport,
    backend: Callable[[str], Backend],
    web: httpx.Client,
) -> None:
    a, b = backend("A"), backend("B")
    route = port_route("hello-dev")
    router.ensure_route(route, [a.dial])
    assert web.get(router.url(route)).text == "A"

    admin_log.sent.clear()
    router.set_upstreams(route, [b.dial])
    assert admin_log.sent == [("GET", "/id/sy-hello-dev-proxy")]  # a read, no reload
    assert serves(web, router.url(route), "B")
    assert {web.get(router.url(route)).text for _ in range(5)} == {"B"}


def test_ensure_route_twice_writes_nothing_the_second_time(
    router: CaddyRouter, admin_log: RecordingTransport
) -> None:
    route = port_route("hello-dev")
    router.ensure_route(route, ["127.0.0.1:9101"])
    assert ("PUT", "/config/apps/http/servers/sy-hello-dev") in admin_log.sent
    admin_log.sent.clear()
    router.ensure_route(route, ["127.0.0.1:9101"])
    assert admin_log.sent == [("GET", "/config/")]
    assert all(path != "/load" for _, path in admin_log.sent)


def test_host_route_answers_for_its_host_only(
    router: CaddyRouter, host_port: int, backend: Callable[[str], Backend], web: httpx.Client
) -> None:
    a, b = backend("A"), backend("B")
    router.ensure_route(Route("site-prod", host="site.test"), [a.dial])
    router.ensure_route(Route("site-dev", host="dev.site.test"), [b.dial])
    shared = f"http://127.0.0.1:{host_port}/"
    assert web.get(shared, headers={"Host": "site.test"}).text == "A"
    assert web.get(shared, headers={"Host": "dev.site.test"}).text == "B"
    unknown = web.get(shared, headers={"Host": "other.test"})
    assert unknown.status_code == 404
    assert "no stage" in unknown.text


def test_request_in_flight_completes_after_the_switch(
    router: CaddyRouter, backend: Callable[[str], Backend], web: httpx.Client
) -> None:
    a, b = backend("A"), backend("B")
    route = port_route("hello-dev")
    router.ensure_route(route, [a.dial])
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(web.get, f"{router.url(route)}/slow")
        time.sleep(0.4)  # the request is now inside backend A
        router.set_upstreams(route, [b.dial])
        assert serves(web, router.url(route), "B")
        answer = slow.result(timeout=10)
    assert (answer.status_code, answer.text) == (200, "A")


def test_switching_under_load_answers_no_error_status(
    router: CaddyRouter, backend: Callable[[str], Backend]
) -> None:
    """Every answer is a 200 and no connection fails: a switch reloads nothing."""
    a, b = backend("A"), backend("B")
    route = port_route("hello-dev")
    router.ensure_route(route, [a.dial])
    done = threading.Event()

    def load() -> list[int | str]:
        outcomes: list[int | str] = []
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not done.is_set():
                try:
                    outcomes.append(client.get(router.url(route)).status_code)
                except httpx.TransportError as exc:
                    outcomes.append(f"{type(exc).__name__}: {exc}")
        return outcomes

    with ThreadPoolExecutor(max_workers=4) as pool:
        clients = [pool.submit(load) for _ in range(4)]
        for upstreams in ([b.dial], [a.dial, b.dial], [a.dial], [b.dial]):
            time.sleep(0.15)
            router.set_upstreams(route, upstreams)
        time.sleep(0.15)
        done.set()
        outcomes = [each for c in clients for each in c.result(timeout=10)]
    statuses = [o for o in outcomes if isinstance(o, int)]
    resets = [o for o in outcomes if isinstance(o, str)]
    assert len(statuses) > 50
    assert set(statuses) == {200}
    assert resets == []


def test_no_upstreams_is_service_unavailable(router: CaddyRouter, web: httpx.Client) -> None:
    route = port_route("hello-dev")
    router.ensure_route(route, [])
    assert web.get(router.url(route)).status_code == 503


def test_an_upstream_that_went_away_is_retried_on_the_other(
    router: CaddyRouter, backend: Callable[[str], Backend], web: httpx.Client
) -> None:
    a, b = backend("A"), backend("B")
    route = port_route("hello-dev")
    router.ensure_route(route, [a.dial, b.dial])
    assert {web.get(router.url(route)).text for _ in range(4)} == {"A", "B"}
    a.stop()
    answers = [web.get(router.url(route)) for _ in range(20)]
    assert [(r.status_code, r.text) for r in answers] == [(200, "B")] * 20


def test_after_a_caddy_restart_ensure_route_serves_again(
    tmp_path: Path, backend: Callable[[str], Backend], web: httpx.Client
) -> None:
    admin_port = free_port()
    a = backend("A")
    route = port_route("hello-dev")
    supervisor = start_caddy(tmp_path / "data", admin_port)
    try:
        with CaddyRouter(f"http://127.0.0.1:{admin_port}", host_port=free_port()) as caddy:
            caddy.ensure_route(route, [a.dial])
            assert web.get(caddy.url(route)).text == "A"
            supervisor.stop()
            with pytest.raises(RetryableError, match=str(admin_port)):
                caddy.set_upstreams(route, [a.dial])
            supervisor = start_caddy(tmp_path / "data", admin_port)
            assert caddy.routes() == []
            assert caddy.upstreams(route) is None
            caddy.ensure_route(route, [a.dial])
            assert web.get(caddy.url(route)).text == "A"
    finally:
        supervisor.stop()


def test_caddy_down_is_a_clear_error() -> None:
    admin = f"http://127.0.0.1:{free_port()}"
    with CaddyRouter(admin, retries=2, backoff=0.01) as caddy:
        with pytest.raises(ComponentError, match=re.escape(admin)) as pinged:
            caddy.ping()
        assert "stackyard up" in (pinged.value.hint or "")
        with pytest.raises(RetryableError, match=re.escape(admin)):
            caddy.ensure_route(port_route("hello-dev"), ["127.0.0.1:9101"])


def test_caddy_refusal_carries_caddys_text(
    router: CaddyRouter, backend: Callable[[str], Backend]
) -> None:
    taken = backend("A")  # a port route cannot listen where a task already does
    port = int(taken.dial.rsplit(":", 1)[1])
    with pytest.raises(ComponentError, match="address already in use") as refused:
        router.ensure_route(Route("hello-dev", port=port), [taken.dial])
    assert f"Caddy at {router.admin_url} refused PUT" in str(refused.value)
    assert router.routes() == []
