"""The Router contract, checked against every implementation (FakeRouter and caddy).

A test module subclasses ``RouterContract`` and provides a ``router`` fixture; the
upstream addresses here are never dialled, so no backend has to run.
"""

from __future__ import annotations

import socket

import pytest

from stackyard.errors import ComponentError, NotFoundError, UsageError
from stackyard.router.base import Route, Router

A = "127.0.0.1:9101"
B = "127.0.0.1:9102"
C = "127.0.0.1:9103"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_route(name: str) -> Route:
    return Route(name, port=free_port())


class RouterContract:
    """Behaviour every Router must have; subclasses supply the ``router`` fixture."""

    def test_ensure_route_creates_it_with_its_upstreams(self, router: Router) -> None:
        route = port_route("hello-dev")
        router.ensure_route(route, [A, B])
        assert router.upstreams(route) == [A, B]

    def test_set_upstreams_replaces_them(self, router: Router) -> None:
        route = port_route("hello-dev")
        router.ensure_route(route, [A])
        router.set_upstreams(route, [B, C])
        assert router.upstreams(route) == [B, C]

    def test_no_upstreams_is_a_route_with_an_empty_list(self, router: Router) -> None:
        route = port_route("hello-dev")
        router.ensure_route(route, [])
        assert router.upstreams(route) == []
        router.set_upstreams(route, [A])
        assert router.upstreams(route) == [A]
        router.set_upstreams(route, [])
        assert router.upstreams(route) == []

    def test_url_of_a_route_is_its_host_or_the_routers_address_and_port(
        self, router: Router
    ) -> None:
        on_port = port_route("hello-dev")
        assert router.url(on_port) == f"http://{router.listen_host}:{on_port.port}"
        # A host route's URL names the router's HTTP port unless it is 80.
        port = getattr(router, "host_port", 80)
        suffix = "" if port == 80 else f":{port}"
        assert router.url(Route("hello-prod", host="hello.test")) == f"http://hello.test{suffix}"

    def test_unknown_route_has_no_upstreams(self, router: Router) -> None:
        assert router.upstreams(port_route("nobody-dev")) is None

    def test_set_upstreams_of_unknown_route_says_to_ensure_it(self, router: Router) -> None:
        with pytest.raises(NotFoundError, match="nobody-dev") as info:
            router.set_upstreams(port_route("nobody-dev"), [A])
        assert "ensure_route" in (info.value.hint or "")

    def test_remove_route_then_it_is_gone(self, router: Router) -> None:
        route = port_route("hello-dev")
        router.ensure_route(route, [A])
        router.remove_route(route)
        assert router.upstreams(route) is None
        assert "hello-dev" not in router.routes()

    def test_remove_twice_and_remove_unknown_are_fine(self, router: Router) -> None:
        route = port_route("hello-dev")
        router.ensure_route(route, [A])
        router.remove_route(route)
        router.remove_route(route)
        router.remove_route(port_route("nobody-dev"))

    def test_routes_lists_names_of_both_kinds(self, router: Router) -> None:
        router.ensure_route(port_route("hello-dev"), [A])
        router.ensure_route(port_route("hello-prod"), [B])
        if router.supports_host_routes:
            router.ensure_route(Route("site-prod", host="site.test"), [C])
        expected = ["hello-dev", "hello-prod"]
        if router.supports_host_routes:
            expected.append("site-prod")
        assert sorted(router.routes()) == expected

    def test_ensure_route_twice_is_idempotent(self, router: Router) -> None:
        route = port_route("hello-dev")
        router.ensure_route(route, [A, B])
        router.ensure_route(route, [A, B])
        assert router.upstreams(route) == [A, B]
        assert router.routes() == ["hello-dev"]

    def test_ensure_route_again_sets_new_upstreams(self, router: Router) -> None:
        route = port_route("hello-dev")
        router.ensure_route(route, [A])
        router.ensure_route(route, [C])
        assert router.upstreams(route) == [C]

    def test_host_routes_work_like_port_routes(self, router: Router) -> None:
        if not router.supports_host_routes:
            pytest.skip("this router has no host routes")
        first = Route("site-dev", host="dev.site.test")
        second = Route("site-prod", host="site.test")
        router.ensure_route(first, [A])
        router.ensure_route(second, [B])
        router.set_upstreams(first, [C])
        assert router.upstreams(first) == [C]
        assert router.upstreams(second) == [B]
        router.remove_route(first)
        router.remove_route(first)
        assert router.upstreams(first) is None
        assert router.routes() == ["site-prod"]

    def test_a_route_can_move_between_port_and_host(self, router: Router) -> None:
        if not router.supports_host_routes:
            pytest.skip("this router has no host routes")
        on_port = port_route("hello-dev")
        on_host = Route("hello-dev", host="hello.test")
        router.ensure_route(on_port, [A])
        router.ensure_route(on_host, [B])
        assert router.upstreams(on_host) == [B]
        router.ensure_route(on_port, [C])
        assert router.upstreams(on_port) == [C]
        assert router.routes() == ["hello-dev"]

    def test_two_routes_cannot_share_a_port(self, router: Router) -> None:
        first = port_route("hello-dev")
        router.ensure_route(first, [A])
        with pytest.raises(ComponentError, match=str(first.port)):
            router.ensure_route(Route("other-dev", port=first.port), [B])
        assert router.upstreams(first) == [A]
        assert router.routes() == ["hello-dev"]

    @pytest.mark.parametrize(
        "route",
        [
            Route("Bad Name", port=8081),
            Route("../admin", port=8081),
            Route("no-address"),
            Route("both", port=8081, host="x.test"),
            Route("bad-port", port=70000),
            Route("bad-host", host="x.test/path"),
        ],
        ids=["spaces", "path", "no-address", "both", "port-range", "host-path"],
    )
    def test_routes_a_router_cannot_serve_are_usage_errors(
        self, router: Router, route: Route
    ) -> None:
        with pytest.raises(UsageError):
            router.ensure_route(route, [A])
        assert router.routes() == []
