"""``/api/v1/targets``: where stages run (admin only), ``local`` built in."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.auth import Me
from stackyard.platform.targets import TargetAdd, TargetCheck, TargetService, TargetView

router = APIRouter(prefix="/targets", tags=["targets"])


class TargetList(BaseModel):
    targets: list[TargetView]


def targets(request: Request) -> TargetService:
    service: TargetService = request.app.state.context.services.targets
    return service


@router.post("", status_code=201)
def add_target(body: TargetAdd, request: Request, me: Me) -> TargetView:
    return targets(request).add(body, created_by=me.name)


@router.get("")
def list_targets(request: Request) -> TargetList:
    return TargetList(targets=targets(request).list())


@router.get("/{name}")
def get_target(name: str, request: Request) -> TargetView:
    return targets(request).get(name)


@router.get("/{name}/check")
def check_target(name: str, request: Request) -> TargetCheck:
    return targets(request).check(name)


@router.delete("/{name}")
def remove_target(name: str, request: Request) -> TargetView:
    return targets(request).remove(name)
