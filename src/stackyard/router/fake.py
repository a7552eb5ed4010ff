"""An in-memory Router for unit tests of the deployment controller and the platform.

It keeps the same contract as the caddy router (tests/router_contract.py checks both),
records every call, and can fail on demand or "restart" and forget its routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from stackyard.errors import ComponentError, NotFoundError, RetryableError, StackyardError
from stackyard.router.base import Route, Router


@dataclass(frozen=True)
class RouterCall:
    """One call made to the fake: the method, the route name and the upstreams given."""

    method: str
    route: str | None = None
    upstreams: tuple[str, ...] = ()


@dataclass
class FakeRouter(Router):
    """Routes live in a dict; ``fail_next`` and ``restart`` simulate a troubled router."""

    name: ClassVar[str] = "fake"
    supports_host_routes: ClassVar[bool] = True

    served: dict[str, tuple[Route, list[str]]] = field(default_factory=dict)
    calls: list[RouterCall] = field(default_factory=list)
    reachable: bool = True
    _failures: list[StackyardError] = field(default_factory=list)

    # Test controls -------------------------------------------------------------------

    def fail_next(self, *errors: StackyardError) -> None:
        """The next calls raise these errors, one per call, before doing anything."""
        self._failures.extend(errors)

    def restart(self) -> None:
        """Forget every route, as Caddy does when it restarts from its base config."""
        self.served.clear()

    # Router --------------------------------------------------------------------------

    def ensure_route(self, route: Route, upstreams: Sequence[str]) -> None:
        self._enter("ensure_route", route, upstreams)
        for other, _ in self.served.values():
            if other.name != route.name and route.port is not None and other.port == route.port:
                raise ComponentError(
                    f"route '{route.name}': port {route.port} is already served by "
                    f"route '{other.name}'",
                    hint="give each stage its own port",
                )
        self.served[route.name] = (route, list(upstreams))

    def set_upstreams(self, route: Route, upstreams: Sequence[str]) -> None:
        self._enter("set_upstreams", route, upstreams)
        if route.name not in self.served:
            raise _missing(route)
        current, _ = self.served[route.name]
        self.served[route.name] = (current, list(upstreams))

    def upstreams(self, route: Route) -> list[str] | None:
        self._enter("upstreams", route)
        found = self.served.get(route.name)
        return None if found is None else list(found[1])

    def remove_route(self, route: Route) -> None:
        self._enter("remove_route", route)
        self.served.pop(route.name, None)

    def routes(self) -> list[str]:
        self._enter("routes")
        return sorted(self.served)

    def ping(self) -> None:
        self._enter("ping")

    def _enter(
        self, method: str, route: Route | None = None, upstreams: Sequence[str] = ()
    ) -> None:
        self.calls.append(RouterCall(method, route.name if route else None, tuple(upstreams)))
        if route is not None:
            route.check()
        if self._failures:
            raise self._failures.pop(0)
        if not self.reachable:
            if method == "ping":
                raise ComponentError("the fake router does not answer", hint="set reachable")
            raise RetryableError("the fake router does not answer")


def _missing(route: Route) -> NotFoundError:
    return NotFoundError(
        f"the router has no route '{route.name}'",
        hint="create it with ensure_route (the router may have restarted and lost it)",
    )
