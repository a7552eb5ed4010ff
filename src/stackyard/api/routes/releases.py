"""``/api/v1/stacks/{name}/stages/{stage}/releases``: release a stage and read its history."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.auth import Me
from stackyard.api.logs import LogChunk, read_log
from stackyard.api.routes.builds import services
from stackyard.pipeline.releases import ImageChoice, ReleaseView

router = APIRouter(prefix="/stacks/{name}", tags=["releases"])


class ReleaseList(BaseModel):
    releases: list[ReleaseView]


class ReleaseRequest(BaseModel):
    """No body, or no choice: promote what the previous stage runs. One of ``commit``,
    ``digest`` or ``tag``: release that image; ``force`` skips the previous-stage check."""

    commit: str | None = None
    digest: str | None = None
    tag: str | None = None
    force: bool = False


@router.post("/stages/{stage}/releases", status_code=201)
def create_release(
    name: str, stage: str, request: Request, me: Me, body: ReleaseRequest | None = None
) -> ReleaseView:
    body = body or ReleaseRequest()
    choice = ImageChoice.given(commit=body.commit, digest=body.digest, tag=body.tag)
    found = services(request)
    return found.releases.release(
        name,
        stage,
        created_by=me.name,
        choice=choice,
        force=body.force,
        four_eyes=found.protection.get(name, stage),
    )


@router.get("/stages/{stage}/releases")
def list_releases(name: str, stage: str, request: Request) -> ReleaseList:
    return ReleaseList(releases=services(request).releases.list(name, stage))


@router.get("/releases")
def list_all_releases(name: str, request: Request) -> ReleaseList:
    return ReleaseList(releases=services(request).releases.list(name))


@router.get("/stages/{stage}/releases/{number}")
def get_release(name: str, stage: str, number: int, request: Request) -> ReleaseView:
    return services(request).releases.get(name, stage, number)


@router.get("/stages/{stage}/releases/{number}/log")
def release_log(name: str, stage: str, number: int, request: Request, offset: int = 0) -> LogChunk:
    release = services(request).releases.get(name, stage, number)
    return read_log(release.log_path, offset, finished=True)
