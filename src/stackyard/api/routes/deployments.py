"""``/api/v1/stacks/{name}/stages/{stage}/…``: deploy, roll back, tasks, check and URL; and
the stage itself, removed once stackyard.yml no longer lists it.

Deploying a chosen release and rolling back go through ``RedeployService`` (the release
side moves the stage tag or copies the release); the rest reads ``DeployService``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.auth import Me
from stackyard.api.logs import LogChunk, read_log
from stackyard.api.routes.builds import services
from stackyard.deploy.records import TERMINAL, DeploymentView
from stackyard.deploy.service import (
    CheckView,
    DeployService,
    StageEvent,
    StageRetired,
    StageUrl,
    TaskView,
)
from stackyard.pipeline.redeploy import RedeployService

router = APIRouter(prefix="/stacks/{name}/stages/{stage}", tags=["deployments"])


class DeployRequest(BaseModel):
    release: int | None = None


class RollbackRequest(BaseModel):
    to: int | None = None


class DeploymentList(BaseModel):
    deployments: list[DeploymentView]
    events: list[StageEvent] = []  # the stage's latest heals and lost nodes, newest first


class TaskList(BaseModel):
    tasks: list[TaskView]


def deployer(request: Request) -> DeployService:
    found: DeployService = services(request).deploy
    return found


def redeployer(request: Request) -> RedeployService:
    found: RedeployService = services(request).redeploy
    return found


@router.post("/deployments", status_code=202)
def deploy(name: str, stage: str, body: DeployRequest, request: Request, me: Me) -> DeploymentView:
    return redeployer(request).deploy(name, stage, body.release, trigger=f"api by {me.name}")


@router.get("/deployments")
def list_deployments(name: str, stage: str, request: Request) -> DeploymentList:
    found = deployer(request)
    return DeploymentList(deployments=found.list(name, stage), events=found.events(name, stage))


@router.get("/deployments/{number}")
def get_deployment(name: str, stage: str, number: int, request: Request) -> DeploymentView:
    return deployer(request).get(name, stage, number)


@router.get("/deployments/{number}/log")
def deployment_log(
    name: str, stage: str, number: int, request: Request, offset: int = 0
) -> LogChunk:
    found = deployer(request).get(name, stage, number)
    return read_log(found.log_path, offset, finished=found.status in TERMINAL)


@router.post("/rollback", status_code=202)
def rollback(
    name: str, stage: str, body: RollbackRequest, request: Request, me: Me
) -> DeploymentView:
    return redeployer(request).rollback(name, stage, body.to, created_by=me.name)


@router.get("/tasks")
def tasks(name: str, stage: str, request: Request) -> TaskList:
    return TaskList(tasks=deployer(request).tasks(name, stage))


@router.get("/check")
def check(name: str, stage: str, request: Request) -> CheckView:
    return deployer(request).check(name, stage)


@router.get("/url")
def url(name: str, stage: str, request: Request) -> StageUrl:
    return deployer(request).url(name, stage)


@router.delete("")
def retire_stage(name: str, stage: str, request: Request, me: Me) -> StageRetired:
    """Stop a stage stackyard.yml no longer lists: its tasks and route go, its history
    stays (``stackyard stages remove``)."""
    return deployer(request).retire(name, stage, by=me.name)
