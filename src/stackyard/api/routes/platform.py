"""``/healthz`` (public), ``/api/v1/status`` and ``/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from stackyard import __version__

public = APIRouter()
"""Mounted without auth: liveness only."""

router = APIRouter()
"""Under ``/api/v1``."""


@public.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    """Liveness for supervisors and load balancers; the only route without auth."""
    return {"status": "ok"}


@router.get("/status")
def platform_status(request: Request) -> dict[str, Any]:
    ctx = request.app.state.context
    return {
        "version": __version__,
        "data_dir": str(ctx.settings.data_dir),
        "api_url": ctx.settings.api_url,
        "public_url": ctx.settings.published_url,  # None: the API is on loopback only
        "registry": ctx.settings.registry_endpoint,
        "router_admin": " ".join(f"unix:{p}" for p in ctx.settings.caddy_admin_sockets),
        "components": ctx.components,
    }


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> dict[str, Any]:
    found: dict[str, Any] = request.app.openapi()
    return found
