"""``/api/v1/stacks/{name}/traffic``: a stack's requests per minute and release, by stage,
from the router's access logs (deploy/traffic.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from stackyard.api.routes.deployments import deployer
from stackyard.deploy.traffic import TrafficReport

router = APIRouter(prefix="/stacks/{name}", tags=["traffic"])


@router.get("/traffic")
def traffic(
    name: str, request: Request, stage: str | None = None, minutes: int = 60
) -> TrafficReport:
    return deployer(request).traffic(name, stage, minutes)
