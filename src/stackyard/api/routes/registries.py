"""``/api/v1/registries``: the outside registries stacks may push to (admin only).

A password goes in with ``POST`` (or ``PATCH``, rotated) and never comes back: the answers carry the
registry's name, URL, user and auth scheme only.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.auth import Me
from stackyard.platform.registries import (
    RegistryAdd,
    RegistryCheck,
    RegistryCredentials,
    RegistryService,
    RegistryView,
)

router = APIRouter(prefix="/registries", tags=["registries"])


class RegistryList(BaseModel):
    registries: list[RegistryView]


def registries(request: Request) -> RegistryService:
    service: RegistryService = request.app.state.context.services.registries
    return service


@router.post("", status_code=201)
def add_registry(body: RegistryAdd, request: Request, me: Me) -> RegistryView:
    return registries(request).add(body, created_by=me.name)


@router.get("")
def list_registries(request: Request) -> RegistryList:
    return RegistryList(registries=registries(request).list())


@router.get("/{name}")
def get_registry(name: str, request: Request) -> RegistryView:
    return registries(request).get(name)


@router.get("/{name}/check")
def check_registry(name: str, request: Request) -> RegistryCheck:
    """Reach the registry with its stored credentials; say what is wrong."""
    return registries(request).check(name)


@router.patch("/{name}")
def update_registry(name: str, body: RegistryCredentials, request: Request) -> RegistryView:
    """New credentials, checked against the registry first; the URL stays."""
    return registries(request).update(name, body)


@router.delete("/{name}")
def remove_registry(name: str, request: Request) -> RegistryView:
    return registries(request).remove(name)
