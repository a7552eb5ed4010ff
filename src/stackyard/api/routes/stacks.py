"""``/api/v1/stacks``: stack CRUD."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.routes.builds import services
from stackyard.api.routes.git import remotes_root
from stackyard.deploy.service import StageSummaries
from stackyard.pipeline.services import Services
from stackyard.source.remote import HostedRemotes
from stackyard.stacks.service import StackChanges, StackService, StackView

router = APIRouter(prefix="/stacks", tags=["stacks"])


class StackCreate(StackChanges):
    name: str


class StackList(BaseModel):
    stacks: list[StackView]


def stacks(request: Request) -> StackService:
    service: StackService = request.app.state.context.services.stacks
    return service


@router.post("", status_code=201)
def create_stack(body: StackCreate, request: Request) -> StackView:
    return stacks(request).create(body.name, body)


@router.get("")
def list_stacks(request: Request) -> StackList:
    return StackList(stacks=stacks(request).list())


@router.get("/{name}")
def get_stack(name: str, request: Request) -> StackView:
    return stacks(request).get(name)


@router.get("/{name}/stages")
def list_stages(name: str, request: Request) -> StageSummaries:
    """Each stage in order: target, release and digest, tasks (desired, running, healthy),
    the newest deployment and the URL."""
    return services(request).deploy.stage_summaries(name)


@router.patch("/{name}")
def update_stack(name: str, body: StackChanges, request: Request) -> StackView:
    return stacks(request).update(name, body)


class StackDeleted(BaseModel):
    deleted: str
    # What the platform could not remove, and why (a registry that refuses deletes, one
    # that does not answer): each "its <what>: <reason>".
    left: list[str]
    # Those of ``left`` the platform removes by itself once their engine or router answers
    # (tasks and routes); the rest is for the user to remove.
    removed_later: list[str] = []


@router.delete("/{name}")
def delete_stack(name: str, request: Request) -> StackDeleted:
    """Delete the stack with its tasks, routes, git remote, cache and images (its copies in
    target registries too); what could not be removed is listed in ``left``."""
    found: Services = request.app.state.context.services
    leftovers = found.delete_stack(name, HostedRemotes(remotes_root(request)))
    return StackDeleted(deleted=name, left=leftovers.left, removed_later=leftovers.swept)
