"""Render console templates: the Jinja2 environment, filters and the security headers.

Every console response goes through ``page`` so it gets the same headers: a strict
Content-Security-Policy (scripts and styles only from /ui/static), no framing, no caching.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stackyard import __version__
from stackyard.api.sessions import CSRF_FIELD, current_session
from stackyard.platform.diskuse import human_bytes
from stackyard.statuses import step_shown_status

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def short_digest(digest: str | None) -> str:
    """``sha256:0123456789ab…`` → ``0123456789ab``: what a person compares at a glance."""
    if not digest:
        return ""
    return digest.partition(":")[2][:12] or digest[:12]


def short_sha(sha: str | None) -> str:
    return (sha or "")[:8]


def ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def status_class(status: str | None) -> str:
    """A CSS class per state family, so colours mean the same everywhere."""
    value = (status or "").upper()
    if value in ("SUCCEEDED", "COMPLETED"):
        return "ok"
    if value in ("FAILED", "CANCELLED"):
        return "bad"
    if value in ("RUNNING", "IN_PROGRESS", "QUEUED"):
        return "busy"
    if value == "WAITING":
        return "wait"
    return "dim"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        short_digest=short_digest,
        short_sha=short_sha,
        ago=ago,
        status_class=status_class,
        bytes=human_bytes,
    )
    env.globals.update(
        version=__version__, csrf_field=CSRF_FIELD, step_shown_status=step_shown_status
    )
    return env


ENVIRONMENT = _environment()


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render ``template`` with the session's CSRF token; the console's headers set."""
    session = current_session(request)
    me = getattr(request.state, "principal", None)
    values = {
        "request": request,
        "path": request.url.path,
        "csrf_token": session.csrf_token if session else "",
        "logged_in": session is not None and me is not None,
        "me": me,
        "cluster": _cluster(request),
        **(context or {}),
    }
    html = ENVIRONMENT.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def _cluster(request: Request) -> bool:
    """Whether the platform's engine has nodes (the console then links its nodes page)."""
    return bool(request.app.state.context.services.controller.engine.supports_nodes)
