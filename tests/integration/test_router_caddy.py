"""The caddy Router against a real data plane started like `stackyard up` does: the keeper,
its upstream responder and two Caddies on loopback, admin APIs on unix sockets.

Backends are tiny ``http.server`` threads on free 127.0.0.1 ports that answer their name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from stackyard.errors import ComponentError, RetryableError
from stackyard.platform.components import caddy_autosave
from stackyard.platform.dataplane import ensure_dataplane, stop_dataplane
from stackyard.platform.state import pid_alive
from stackyard.plugins import load
from stackyard.router.base import Route
from stackyard.router.caddy import AdminRequest, CaddyRouter, UnixSocketTransport
from stackyard.settings import Settings

from ..router_contract import RouterContract, free_port, port_route
from .backends import Backend
from .wrk import Load

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# The data plane ---------------------------------------------------------------------------


def start_dataplane(data_dir: Path) -> Settings:
    if shutil.which("caddy") is None or shutil.which("docker-registry") is None:
        pytest.fail("caddy or docker-registry is not installed: run scripts/setup-host first")
    settings = Settings(data_dir=data_dir, registry_port=free_port())
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ensure_dataplane(settings)
    return settings


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = start_dataplane(tmp_path_factory.mktemp("caddy") / "data")
    try:
        yield settings
    finally:
        stop_dataplane(settings)


@pytest.fixture(scope="module")
def host_port() -> int:
    return free_port()


class RecordingTransport(httpx.BaseTransport):
    """Counts the admin requests the router sends (to every Caddy), then sends them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.inner: list[UnixSocketTransport] = []

    def over(self, socket_path: Path) -> httpx.BaseTransport:
        recorder = self
        inner = UnixSocketTransport(socket_path)
        self.inner.append(inner)

        class One(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                recorder.sent.append((request.method, request.url.path))
                return inner.handle_request(request)

            def close(self) -> None:
                inner.close()

        return One()

    def close(self) -> None:
        for inner in self.inner:
            inner.close()


@pytest.fixture
def admin_log() -> RecordingTransport:
    return RecordingTransport()


def router_for(settings: Settings, **options: object) -> CaddyRouter:
    return CaddyRouter(
        settings.caddy_admin_sockets,
        settings.dataplane_socket,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def router(
    dataplane: Settings, host_port: int, admin_log: RecordingTransport
) -> Iterator[CaddyRouter]:
    caddy = router_for(dataplane, host_port=host_port, transport_for=admin_log.over)
    try:
        yield caddy
    finally:
        for name in caddy.routes():
            caddy.remove_route(Route(name, port=1))
        caddy.close()


# Backends and traffic --------------------------------------------------------------------


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
    assert admin_log.sent == [("GET", "/id/sy-hello-dev-proxy")] * 2  # a read, no reload
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
    assert admin_log.sent == [("GET", "/config/")] * 2  # one read of each Caddy
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


def _status_line(port: int, host: str) -> str:
    """A GET with exactly this Host header (an HTTP client would refuse or mend some)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.partition(b"\r\n")[0].decode()


def test_a_host_that_is_not_a_dns_name_is_not_served_at_once(
    router: CaddyRouter, host_port: int, backend: Callable[[str], Backend]
) -> None:
    """Such a Host cannot be looked up; the proxy by host would try for its whole
    try_duration and answer 503. The host server's first route answers 404 instead."""
    router.ensure_route(Route("site-prod", host="site.test"), [backend("A").dial])
    assert _status_line(host_port, "site.test:8080") == "HTTP/1.1 200 OK"
    assert _status_line(host_port, "127.0.0.1:8080") == "HTTP/1.1 404 Not Found"
    for host in ("[::1]", "[::1]:80", "a..b", "site.test.", "-x-.test", "*", "", "a%20b",
                 f"{'x' * 64}.test", "abcdefghi." * 23 + "test"):  # fmt: skip
        assert _status_line(host_port, host) == "HTTP/1.1 404 Not Found", host


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


def test_no_upstreams_is_service_unavailable(
    router: CaddyRouter, backend: Callable[[str], Backend], web: httpx.Client
) -> None:
    route = port_route("hello-dev")
    router.ensure_route(route, [backend("A").dial])
    own = web.get(f"{router.url(route)}/status/503")  # the app's own 503: its body, as it is
    assert (own.status_code, own.text) == (503, "A")
    router.ensure_route(route, [])
    deadline = time.monotonic() + 10  # the proxy's upstream lookup refreshes
    answer = web.get(router.url(route))
    while answer.status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = web.get(router.url(route))
    assert answer.status_code == 503
    assert answer.text == (  # before: an empty body, which told the user nothing
        "Stackyard: no task of this stage could answer (503 Service Unavailable); it may "
        "be starting, scaled to zero or failing\n"
    )


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


def wait_restarted(settings: Settings, name: str, old_pid: int, timeout: float = 30) -> int:
    """The pid of the Caddy the keeper started in place of ``old_pid``, once it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = json.loads(settings.dataplane_file.read_text())
        pid = int(record["components"][name])
        if pid != old_pid and pid_alive(pid):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{name} was not started again within {timeout} s")


def test_a_killed_caddy_comes_back_with_every_route_while_the_other_serves(
    dataplane: Settings, router: CaddyRouter, backend: Callable[[str], Backend], web: httpx.Client
) -> None:
    a = backend("A")
    route = port_route("hello-dev")
    router.ensure_route(route, [a.dial])
    assert web.get(router.url(route)).text == "A"
    victim = int(json.loads(dataplane.dataplane_file.read_text())["components"]["caddy-1"])
    os.kill(victim, signal.SIGKILL)
    # The other Caddy listens on the same port: every new connection is still answered.
    with httpx.Client(
        timeout=10, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
    ) as fresh:
        answers = [fresh.get(router.url(route)).text for _ in range(20)]
    assert answers == ["A"] * 20
    wait_restarted(dataplane, "caddy-1", victim)
    assert router.routes() == ["hello-dev"]  # resumed from its saved config, on both
    assert router.upstreams(route) == [a.dial]
    assert web.get(router.url(route)).text == "A"


def test_a_caddy_that_lost_its_saved_config_gets_its_routes_from_ensure_route(
    dataplane: Settings, router: CaddyRouter, backend: Callable[[str], Backend], web: httpx.Client
) -> None:
    a = backend("A")
    route = port_route("hello-dev")
    router.ensure_route(route, [a.dial])
    victim = int(json.loads(dataplane.dataplane_file.read_text())["components"]["caddy-2"])
    caddy_autosave(dataplane, 2).unlink()
    os.kill(victim, signal.SIGKILL)
    wait_restarted(dataplane, "caddy-2", victim)
    deadline = time.monotonic() + 10
    while router.upstreams(route) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # until caddy-2 answers, it is asked about the old process
    assert router.upstreams(route) is None  # the controller's cue to ensure_route
    assert web.get(router.url(route)).text == "A"  # caddy-1 serves meanwhile
    router.ensure_route(route, [a.dial])
    assert router.upstreams(route) == [a.dial]


def test_caddy_down_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with router_for(settings, retries=2, backoff=0.01) as caddy:
        with pytest.raises(ComponentError, match=re.escape(str(settings.run_dir))) as pinged:
            caddy.ping()
        assert "stackyard up" in (pinged.value.hint or "")
        with pytest.raises(RetryableError, match=re.escape(str(settings.dataplane_socket))):
            caddy.ensure_route(port_route("hello-dev"), ["127.0.0.1:9101"])


def test_caddy_refusal_carries_caddys_text(
    router: CaddyRouter, backend: Callable[[str], Backend]
) -> None:
    taken = backend("A")  # a port route cannot listen where a task already does
    port = int(taken.dial.rsplit(":", 1)[1])
    with pytest.raises(ComponentError, match="address already in use") as refused:
        router.ensure_route(Route("hello-dev", port=port), [taken.dial])
    assert f"Caddy at {router.admins[0]} refused PUT" in str(refused.value)
    assert router.routes() == []


def test_adding_and_removing_names_drops_no_request_to_the_stages_other_names(
    router: CaddyRouter,
    host_port: int,
    admin_log: RecordingTransport,
    backend: Callable[[str], Backend],
    web: httpx.Client,
    tmp_path: Path,
) -> None:
    """wrk on a stage's name (keep-alive) while the same stage gains and loses names, 9
    changes: not one request fails, because a name change changes no Caddy config."""
    app = backend("A")
    steady = Route("site-prod", host="site.test")
    router.ensure_route(steady, [app.dial])
    with Load(f"http://site.test:{host_port}/", 60, pin=tmp_path) as load:
        time.sleep(0.5)
        admin_log.sent.clear()
        for n in range(3):
            one = Route("site-prod", host="site.test", aliases=(f"a{n}.site.test",))
            router.ensure_route(one, [app.dial])
            assert (
                web.get(f"http://127.0.0.1:{host_port}/", headers={"Host": f"a{n}.site.test"}).text
                == "A"
            )
            two = Route("site-prod", host="site.test", aliases=(f"a{n}.site.test", "b.site.test"))
            router.ensure_route(two, [app.dial])
            router.ensure_route(steady, [app.dial])
        time.sleep(0.5)
        result = load.stop()
    assert result.requests > 100
    assert (result.errors, result.raw) == (0, result.raw)
    changes = [sent for sent in admin_log.sent if sent[0] != "GET"]
    assert changes == []  # no admin change: no reload
    gone = web.get(f"http://127.0.0.1:{host_port}/", headers={"Host": "b.site.test"})
    assert gone.status_code == 404


def test_refresh_brings_an_old_default_log_to_todays_shape_without_a_route_change(
    dataplane: Settings, router: CaddyRouter, admin_log: RecordingTransport, host_port: int,
    backend: Callable[[str], Backend], web: httpx.Client,
) -> None:  # fmt: skip
    """An install of before: Caddy's default log copies every access line (its config has
    no ``default`` log). The control plane's start calls refresh(), which fixes that on
    every Caddy, with no ``ensure_route``; then a request's line is in the access log and
    no longer in Caddy's own log."""
    app = backend("logged")
    router.ensure_route(Route("old-prod", host="old.test"), [app.dial])
    for admin in router.admins:
        admin.send(AdminRequest("DELETE", "/config/logging/logs/default"))
        assert "default" not in admin.config()["logging"]["logs"]
    admin_log.sent.clear()
    router.refresh()
    for admin in router.admins:
        logs = admin.config()["logging"]["logs"]
        assert logs["default"] == {"exclude": ["http.log.access"]}
    assert ("PUT", "/config/logging/logs/default") in admin_log.sent
    admin_log.sent.clear()
    router.refresh()  # nothing more to change: only reads
    assert all(method == "GET" for method, _ in admin_log.sent), admin_log.sent
    marker = f"/refreshed-{time.monotonic_ns()}"
    for _ in range(4):  # each Caddy answers some (SO_REUSEPORT)
        web.get(f"http://127.0.0.1:{host_port}{marker}", headers={"Host": "old.test"})
    own_logs = [dataplane.logs_dir / f"caddy-{n}.log" for n in (1, 2)]
    time.sleep(0.5)
    assert not any(marker in log.read_text() for log in own_logs if log.exists())
