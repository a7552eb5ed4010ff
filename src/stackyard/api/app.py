"""Build the FastAPI application from a platform context; tests build their own.

Routes and the console reach the platform only through the services in the context; the
import-linter contracts keep the store, engines, router and SQLAlchemy out of ``api``.
Every ``/api/v1`` route goes through ``api/auth.py`` ``authorize`` with its entry in the
permission table (``api/permissions.py``), and ``api/audit.py`` records every change
and every refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from stackyard import __version__
from stackyard.access.limits import FailureLimiter
from stackyard.api.audit import AuditMiddleware
from stackyard.api.auth import authorize
from stackyard.api.permissions import NEEDS
from stackyard.api.routes import (
    audit,
    builds,
    deployments,
    domains,
    git,
    hooks,
    logs,
    nodes,
    notify,
    people,
    platform,
    protection,
    registries,
    releases,
    retention,
    runs,
    stacks,
    targets,
    traffic,
    variables,
)
from stackyard.api.web.console import install_console
from stackyard.errors import (
    AccessDenied,
    NotFoundError,
    OperationFailed,
    StackyardError,
    UsageError,
)
from stackyard.pipeline.services import Services
from stackyard.settings import Settings


@dataclass
class ApiContext:
    """What the API needs: settings, the bootstrap admin token ("" if it was revoked),
    the components and the services."""

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
    app.state.context = context
    app.state.needs = dict(NEEDS)
    app.state.auth_limiter = FailureLimiter(
        context.settings.auth_failures, context.settings.auth_window
    )
    if context.token:
        context.services.people.ensure_bootstrap(context.token)

    app.include_router(platform.public)
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(authorize)])
    api.include_router(platform.router)
    modules = (stacks, builds, releases, deployments, domains, traffic, runs, logs, variables)
    for module in (*modules, protection, notify, nodes, retention):
        api.include_router(module.router)
    api.include_router(people.router)
    api.include_router(registries.router)
    api.include_router(targets.router)
    api.include_router(audit.router)
    api.include_router(git.push_router)
    api.include_router(hooks.admin_router)
    app.include_router(api)
    # Git's Basic auth and the webhooks' signatures replace the bearer token here.
    app.include_router(git.router)
    app.include_router(hooks.router)
    install_console(app)  # the web console under /ui, with its static files
    _install_error_handlers(app)
    app.add_middleware(
        AuditMiddleware,
        audit=lambda: context.services.audit,
        needs=lambda: app.state.needs,
    )
    return app


_STATUS_OF: tuple[tuple[type[StackyardError], int], ...] = (
    (NotFoundError, 404),
    (UsageError, 400),
    (OperationFailed, 409),
)
"""The HTTP status of the errors raised on purpose (AccessDenied is answered apart, with
the permission it takes); any other StackyardError is 500."""


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """An API request whose body, query or path does not fit gets the one error shape
        (``error``, ``hint``) naming each field, and FastAPI's ``detail`` list as before."""
        if not request.url.path.startswith("/api/"):
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(field_problem(error) for error in exc.errors())
        return JSONResponse(
            status_code=422,
            content={
                "error": f"invalid request: {problems}",
                "hint": "fix the fields named above and send it again",
                "detail": jsonable_encoder(exc.errors()),
            },
        )

    @app.exception_handler(StackyardError)
    def stackyard_error(_request: Request, exc: StackyardError) -> JSONResponse:
        if isinstance(exc, AccessDenied):
            return JSONResponse(
                status_code=403,
                content={"error": exc.message, "hint": exc.hint, "permission": exc.permission},
            )
        code = next((c for kind, c in _STATUS_OF if isinstance(exc, kind)), 500)
        return JSONResponse(status_code=code, content={"error": exc.message, "hint": exc.hint})


def field_problem(error: Mapping[str, Any]) -> str:
    """``body.name: Input should be a valid string (got 5)``: one of pydantic's errors."""
    loc = tuple(error.get("loc", ()))
    where = ".".join(str(part) for part in loc)
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "missing":
        return f"{where}: required"
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", message)
        return f"the body is not JSON ({reason}, at character {loc[-1] if loc else '?'})"
    shown = error.get("input")
    if not isinstance(shown, dict | list):
        message += f" (got {shown!r})"
    return f"{where}: {message}"
