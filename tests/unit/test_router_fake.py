"""FakeRouter keeps the Router contract, and its test controls behave as documented."""

from __future__ import annotations

import pytest

from stackyard.errors import ComponentError, RetryableError
from stackyard.plugins import load
from stackyard.router.base import Route
from stackyard.router.fake import FakeRouter, RouterCall

from ..router_contract import A, B, RouterContract


class TestFakeRouterContract(RouterContract):
    @pytest.fixture
    def router(self) -> FakeRouter:
        return FakeRouter()


ROUTE = Route("hello-dev", port=8081)


def test_registered_as_a_plugin() -> None:
    assert load("router", "fake") is FakeRouter


def test_records_every_call() -> None:
    fake = FakeRouter()
    fake.ensure_route(ROUTE, [A])
    fake.set_upstreams(ROUTE, [B])
    fake.remove_route(ROUTE)
    assert fake.calls == [
        RouterCall("ensure_route", "hello-dev", (A,)),
        RouterCall("set_upstreams", "hello-dev", (B,)),
        RouterCall("remove_route", "hello-dev"),
    ]


def test_fail_next_raises_once_and_changes_nothing() -> None:
    fake = FakeRouter()
    fake.ensure_route(ROUTE, [A])
    fake.fail_next(RetryableError("Caddy blinked"))
    with pytest.raises(RetryableError, match="blinked"):
        fake.set_upstreams(ROUTE, [B])
    assert fake.upstreams(ROUTE) == [A]
    fake.set_upstreams(ROUTE, [B])
    assert fake.upstreams(ROUTE) == [B]


def test_restart_forgets_routes_until_they_are_ensured_again() -> None:
    fake = FakeRouter()
    fake.ensure_route(ROUTE, [A])
    fake.restart()
    assert fake.routes() == []
    assert fake.upstreams(ROUTE) is None
    fake.ensure_route(ROUTE, [A])
    assert fake.upstreams(ROUTE) == [A]


def test_unreachable_router_pings_as_component_error_and_calls_are_retryable() -> None:
    fake = FakeRouter(reachable=False)
    with pytest.raises(ComponentError):
        fake.ping()
    with pytest.raises(RetryableError):
        fake.ensure_route(ROUTE, [A])
    fake.reachable = True
    fake.ping()


def test_upstreams_returns_a_copy() -> None:
    fake = FakeRouter()
    fake.ensure_route(ROUTE, [A])
    listed = fake.upstreams(ROUTE)
    assert listed is not None
    listed.append(B)
    assert fake.upstreams(ROUTE) == [A]
