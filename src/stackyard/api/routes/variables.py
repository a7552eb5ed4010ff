"""``/api/v1/stacks/{name}/variables`` and ``/secrets``: set, list and unset them.

A secret's value goes in and never comes out: every response names secrets with their
version and when they were set. A change answers with what it set off: the stages that got
a new release and deployment, or the pipeline run that rebuilds.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from stackyard.api.auth import Me
from stackyard.api.routes.builds import services
from stackyard.pipeline.variables import ChangeView, SecretList, VariableList, VariableService

router = APIRouter(prefix="/stacks/{name}", tags=["variables"])


class VariableValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str


class VariableChanges(BaseModel):
    """Several variables of one scope at once: one new release (or rebuild) for all."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, str] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(repr=False)


def variables(request: Request) -> VariableService:
    found: VariableService = services(request).variables
    return found


@router.get("/variables")
def list_variables(
    name: str, request: Request, stage: str | None = None, build: bool = False
) -> VariableList:
    """Every variable; ``?stage=S``: the runtime ones that apply to S; ``?build=true``."""
    return variables(request).list_variables(name, stage=stage, build=build)


@router.patch("/variables")
def change_variables(
    name: str,
    body: VariableChanges,
    request: Request,
    me: Me,
    stage: str | None = None,
    build: bool = False,
) -> ChangeView:
    return variables(request).change_variables(
        name, values=body.set, unset=body.unset, stage=stage, build=build, created_by=me.name
    )


@router.put("/variables/{key}")
def set_variable(
    name: str,
    key: str,
    body: VariableValue,
    request: Request,
    me: Me,
    stage: str | None = None,
    build: bool = False,
) -> ChangeView:
    return variables(request).change_variables(
        name, values={key: body.value}, stage=stage, build=build, created_by=me.name
    )


@router.delete("/variables/{key}")
def unset_variable(
    name: str,
    key: str,
    request: Request,
    me: Me,
    stage: str | None = None,
    build: bool = False,
) -> ChangeView:
    return variables(request).change_variables(
        name, unset=[key], stage=stage, build=build, created_by=me.name
    )


@router.get("/secrets")
def list_secrets(name: str, request: Request, stage: str | None = None) -> SecretList:
    return variables(request).list_secrets(name, stage=stage)


@router.put("/secrets/{key}")
def set_secret(
    name: str, key: str, body: SecretValue, request: Request, me: Me, stage: str | None = None
) -> ChangeView:
    return variables(request).set_secret(name, key, body.value, stage=stage, created_by=me.name)


@router.delete("/secrets/{key}")
def unset_secret(
    name: str, key: str, request: Request, me: Me, stage: str | None = None
) -> ChangeView:
    return variables(request).unset_secret(name, key, stage=stage, created_by=me.name)
