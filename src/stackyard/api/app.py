"""Build the FastAPI application from a platform context; tests build their own.

Routes and the console reach the platform only through the services in the context; the
import-linter contracts keep the store, engines, router and SQLAlchemy out of ``api``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from stackyard import __version__
from stackyard.api.auth import require_token
from stackyard.api.routes import (
    builds,
    deployments,
    git,
    hooks,
    logs,
    releases,
    runs,
    stacks,
    variables,
)
from stackyard.api.web.console import install_console
from stackyard.errors import (
    NotFoundError,
    StackyardError,
    UsageError,
)
from stackyard.pipeline.services import Services
from stackyard.settings import Settings


@dataclass
class ApiContext:
    """What the API needs: settings, the admin token, the components and the services."""

    settings: Settings
    token: str
    components: dict[str, str]
    services: Services


def create_app(context: ApiContext) -> FastAPI:
    # The OpenAPI document and docs pages are routes too: serve them behind auth only.
    app = FastAPI(
        title="Stackyard",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.token = context.token
    app.state.context = context

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness for supervisors and load balancers; the only route without auth."""
        return {"status": "ok"}

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)])

    @api.get("/status")
    def platform_status(request: Request) -> dict[str, Any]:
        ctx: ApiContext = request.app.state.context
        return {
            "version": __version__,
            "data_dir": str(ctx.settings.data_dir),
            "api_url": ctx.settings.api_url,
            "registry": ctx.settings.registry_endpoint,
            "router_admin": ctx.settings.caddy_admin_url,
            "components": ctx.components,
        }

    @api.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    for module in (stacks, builds, releases, deployments, runs, logs, variables):
        api.include_router(module.router)
    api.include_router(git.push_router)
    api.include_router(hooks.admin_router)
    app.include_router(api)
    # Git's Basic auth and the webhooks' signatures replace the bearer token here.
    app.include_router(git.router)
    app.include_router(hooks.router)
    install_console(app)  # the web console under /ui, with its static files
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StackyardError)
    def stackyard_error(_request: Request, exc: StackyardError) -> JSONResponse:
        code = (
            404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, UsageError) else 500
        )
        return JSONResponse(status_code=code, content={"error": exc.message, "hint": exc.hint})
