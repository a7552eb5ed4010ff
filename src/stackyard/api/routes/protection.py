"""``/api/v1/stacks/{name}/protection`` and ``/stages/{stage}/protection``: protected stages.

Protection lives on the platform only; a repository's stackyard.yml never changes it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from stackyard.access.protection import ProtectionList, ProtectionService, ProtectionView
from stackyard.api.auth import Me

router = APIRouter(prefix="/stacks/{name}", tags=["protection"])


class ProtectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approvers: list[str] = []
    deployers: list[str] = []
    four_eyes: bool = False


def protection(request: Request) -> ProtectionService:
    found: ProtectionService = request.app.state.context.services.protection
    return found


@router.get("/protection")
def list_protection(name: str, request: Request) -> ProtectionList:
    return protection(request).list_of(name)


@router.put("/stages/{stage}/protection")
def protect(
    name: str, stage: str, body: ProtectionBody, request: Request, me: Me
) -> ProtectionView:
    return protection(request).protect(
        name,
        stage,
        approvers=body.approvers,
        deployers=body.deployers,
        four_eyes=body.four_eyes,
        by=me.name,
    )


@router.delete("/stages/{stage}/protection", status_code=204)
def unprotect(name: str, stage: str, request: Request) -> Response:
    protection(request).unprotect(name, stage)
    return Response(status_code=204)
