"""Reading the Stackyard routes back out of a Caddy config (an upgrade hands them over)."""

from __future__ import annotations

from stackyard.router.base import Route
from stackyard.router.caddy import (
    FoundRoutes,
    handler,
    hosts_server,
    port_server,
    routes_in,
)


def test_routes_written_by_the_router_are_read_back_with_their_resolver() -> None:
    resolver = "127.0.0.1:5353"
    config = {
        "apps": {
            "http": {
                "servers": {
                    "sy-hello-dev": port_server(
                        Route("hello-dev", port=8081), resolver, "127.0.0.1"
                    ),
                    "stackyard-hosts": hosts_server(
                        "127.0.0.1:8080",
                        resolver,
                        {  # a plain host route as versions before the by-host proxy wrote it
                            "@id": "sy-hello-prod-host",
                            "match": [{"host": ["hello.test"]}],
                            "handle": [handler("hello-prod", resolver)],
                            "terminal": True,
                        },
                    ),
                    "someone-elses": {"listen": [":9999"], "routes": []},
                }
            }
        }
    }
    assert routes_in(config) == FoundRoutes(
        routes=(
            (Route("hello-dev", port=8081), resolver),
            (Route("hello-prod", host="hello.test"), resolver),
        ),
        host_port=8080,
    )


def test_a_config_without_routes_has_none() -> None:
    assert routes_in({"apps": {"http": {"servers": {}}}}) == FoundRoutes((), None)
    assert routes_in({}) == FoundRoutes((), None)
