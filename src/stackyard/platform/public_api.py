"""The API published on a host name (``up --public-api``): the console, the API, the git
remote and the webhook endpoints over HTTPS through the router, one host route whose
upstream is the API's loopback port. The API itself keeps listening on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stackyard.errors import StackyardError
from stackyard.router.base import Route, Router
from stackyard.settings import Settings

# Stage routes are named ``<stack>-<stage>``, DNS labels without dots: this one never clashes.
ROUTE_NAME = "stackyard.api"


def public_api_route(settings: Settings) -> Route | None:
    """The route that publishes the API, or None when the platform is not asked to."""
    if not settings.public_api:
        return None
    return Route(ROUTE_NAME, host=settings.public_api, tls="acme")


def publish_api(settings: Settings, router: Router) -> None:
    """Make the router serve the API on its public name, or stop serving it there when the
    platform no longer asks (a previous ``up --public-api``)."""
    route = public_api_route(settings)
    if route is None:
        router.remove_route(Route.named(ROUTE_NAME))
    else:
        router.ensure_route(route, [f"{settings.host}:{settings.api_port}"])


def refresh_router(router: Router) -> None:
    """``router.refresh()`` (an install of before gets this version's shared config),
    logging a failure instead of raising: at start, or after Caddy restarted; the next
    ``ensure_route`` applies it too."""
    _warned("updating the router's config", router.refresh)


def republish_api(settings: Settings, router: Router) -> None:
    """``publish_api``, logging a failure instead of raising: after Caddy restarted, or to
    unpublish at start; the control plane keeps serving on loopback either way."""
    name = settings.public_api or "no name"
    _warned(f"publishing the API on {name}", lambda: publish_api(settings, router))


def _warned(doing: str, call: Callable[[], None]) -> None:
    """``call()``; a StackyardError it raises is logged as a warning on ``doing`` instead."""
    try:
        call()
    except StackyardError as exc:
        logging.getLogger(__name__).warning("%s: %s", doing, exc.message)
