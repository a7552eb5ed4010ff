"""``/api/v1/stacks/{name}/builds`` and ``/images``: start builds, read them and their logs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.logs import LogChunk, read_log
from stackyard.pipeline.builds import TERMINAL, BuildView
from stackyard.pipeline.services import Services

router = APIRouter(prefix="/stacks/{name}", tags=["builds"])


class BuildRequest(BaseModel):
    ref: str | None = None


class BuildList(BaseModel):
    builds: list[BuildView]


class ImageView(BaseModel):
    digest: str
    tags: list[str]
    size: int


class ImageList(BaseModel):
    repository: str
    images: list[ImageView]


def services(request: Request) -> Services:
    found: Services = request.app.state.context.services
    return found


@router.post("/builds", status_code=202)
def start_build(name: str, body: BuildRequest, request: Request) -> BuildView:
    return services(request).builds.start(name, body.ref)


@router.get("/builds")
def list_builds(name: str, request: Request) -> BuildList:
    return BuildList(builds=services(request).builds.list(name))


@router.get("/builds/{number}")
def get_build(name: str, number: int, request: Request) -> BuildView:
    return services(request).builds.get(name, number)


@router.get("/builds/{number}/log")
def build_log(name: str, number: int, request: Request, offset: int = 0) -> LogChunk:
    build = services(request).builds.get(name, number)
    return read_log(build.log_path, offset, finished=build.status in TERMINAL)


@router.get("/images")
def list_images(name: str, request: Request) -> ImageList:
    found = services(request)
    found.stacks.get(name)  # a clear 404 for an unknown stack
    images = [
        ImageView(digest=g.digest, tags=g.tags, size=g.size) for g in found.images.images(name)
    ]
    return ImageList(repository=found.images.image_url(name), images=images)
