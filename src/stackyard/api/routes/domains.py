"""``/api/v1/stacks/{name}/domains`` and ``…/stages/{stage}/domains``: the host names of a
stack's stages with their certificates' state, and names added or taken back by hand."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.routes.deployments import deployer
from stackyard.deploy.domains import DomainList

router = APIRouter(prefix="/stacks/{name}", tags=["domains"])


class DomainRequest(BaseModel):
    name: str


@router.get("/domains")
def domains(name: str, request: Request) -> DomainList:
    return deployer(request).domains(name)


@router.post("/stages/{stage}/domains")
def add(name: str, stage: str, body: DomainRequest, request: Request) -> DomainList:
    return deployer(request).add_domain(name, stage, body.name)


@router.delete("/stages/{stage}/domains/{domain}")
def remove(name: str, stage: str, domain: str, request: Request) -> DomainList:
    return deployer(request).remove_domain(name, stage, domain)
