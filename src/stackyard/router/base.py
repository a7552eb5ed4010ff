"""The Router seam: send a stage's traffic to its healthy tasks, and change that safely.

A route belongs to one stage and keeps its address (a loopback port, or a host name)
across deployments; only its upstreams change. ``caddy`` implements it through Caddy's
admin API; ``FakeRouter`` (router/fake.py) implements it in memory for unit tests.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from stackyard.errors import UsageError

# Route names become router object ids (Caddy's ``@id``) and URL path segments.
_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    """Where a stage is served: a port on the router's address, or a host name on the
    router's shared port. ``Router.url`` gives its address."""

    name: str  # unique per stage, e.g. "hello-dev"
    port: int | None = None
    host: str | None = None

    def check(self) -> None:
        """Raise UsageError unless a router can serve this route: a safe name, one address."""
        if not _ROUTE_NAME.fullmatch(self.name):
            raise UsageError(
                f"route name '{self.name}' is not usable by a router",
                hint="use lowercase letters, digits, '-', '_' or '.', starting with a letter "
                "or digit (at most 63 characters), e.g. 'hello-dev'",
            )
        if (self.port is None) == (self.host is None):
            raise UsageError(
                f"route '{self.name}' needs exactly one of port or host",
                hint="a stage is served on 127.0.0.1:<port> or on a host name, not both",
            )
        if self.port is not None and not 1 <= self.port <= 65535:
            raise UsageError(f"route '{self.name}': port {self.port} is not in 1-65535")
        if self.host is not None and not _HOST_NAME.fullmatch(self.host):
            raise UsageError(f"route '{self.name}': '{self.host}' is not a host name")


class Router(ABC):
    """Implementations register under the ``stackyard.routers`` entry point group."""

    name: ClassVar[str]
    supports_host_routes: ClassVar[bool] = False
    listen_host: str = "127.0.0.1"  # where port routes listen; an adapter may set its own

    def url(self, route: Route) -> str:
        """Where clients reach the route: its host name, or the router's address and port."""
        if route.host:
            return f"http://{route.host}"
        return f"http://{self.listen_host}:{route.port}"

    @abstractmethod
    def ensure_route(self, route: Route, upstreams: Sequence[str]) -> None:
        """Create the route if missing, then set its upstreams (task addresses,
        ``"127.0.0.1:8123"``)."""

    @abstractmethod
    def set_upstreams(self, route: Route, upstreams: Sequence[str]) -> None:
        """Replace the route's upstreams without dropping connections in flight."""

    @abstractmethod
    def upstreams(self, route: Route) -> list[str] | None:
        """The route's current upstreams, or None when the router has no such route."""

    @abstractmethod
    def remove_route(self, route: Route) -> None:
        """Stop serving the route; a route that is already gone is fine."""

    @abstractmethod
    def routes(self) -> list[str]:
        """Names of the routes this router serves for Stackyard."""

    def ping(self) -> None:  # noqa: B027 - optional
        """Raise ComponentError when the router does not answer."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the router holds (connections, threads)."""
