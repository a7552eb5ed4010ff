"""Mount the console on the API app: its routes, its static files and its session keys.

``create_app`` calls ``install_console`` once; tests that build their own app get a
console with its own per-start session key.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from stackyard.api.sessions import ConsoleSessions
from stackyard.api.web import actions, pages
from stackyard.api.web.render import STATIC, page

HTML_ERRORS = (400, 403, 404, 413, 415)


def install_console(app: FastAPI) -> None:
    """Console routes under /ui, static files (CSS and JS, nothing secret) under /ui/static."""
    app.state.console_sessions = ConsoleSessions()
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")
    for router in (actions.public, actions.router, pages.fragments, pages.router, pages.root):
        app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def console_errors(request: Request, exc: StarletteHTTPException) -> Response:
        """Console forms and pages get an HTML page for their errors (a CSRF refusal
        among them); the API keeps its JSON answers."""
        path = request.url.path
        if (
            path.startswith("/ui/")
            and not path.startswith("/ui/fragments/")
            and exc.status_code in HTML_ERRORS
        ):
            return page(
                request,
                "problem.html",
                {"message": str(exc.detail), "hint": None},
                status_code=exc.status_code,
            )
        return await http_exception_handler(request, exc)
