"""``/api/v1/stacks/{name}/runs`` and stage gates: start, follow, cancel, approve, promote."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.auth import Me
from stackyard.api.logs import LogChunk, read_log
from stackyard.api.routes.builds import services
from stackyard.pipeline.runs import TERMINAL as RUN_DONE
from stackyard.pipeline.runs import PipelineService, RunView

router = APIRouter(prefix="/stacks/{name}", tags=["runs"])


class RunRequest(BaseModel):
    ref: str | None = None
    commit: str | None = None


class PromoteRequest(BaseModel):
    source: str | None = None


class RunList(BaseModel):
    runs: list[RunView]


def pipeline(request: Request) -> PipelineService:
    found: PipelineService = services(request).runs
    return found


@router.post("/runs", status_code=202)
def start_run(name: str, body: RunRequest, request: Request, me: Me) -> RunView:
    return pipeline(request).start_run(
        name, trigger="api", ref=body.ref, commit=body.commit, pushed_by=me.name
    )


@router.get("/runs")
def list_runs(name: str, request: Request, limit: int = 20) -> RunList:
    return RunList(runs=pipeline(request).recent(name, limit=max(1, min(limit, 200))))


@router.get("/runs/{number}")
def get_run(name: str, number: int, request: Request) -> RunView:
    return pipeline(request).get(name, number)


@router.get("/runs/{number}/log")
def run_log(name: str, number: int, request: Request, offset: int = 0) -> LogChunk:
    run = pipeline(request).get(name, number)
    return read_log(run.log_path, offset, finished=run.status in RUN_DONE)


@router.post("/runs/{number}/cancel")
def cancel_run(name: str, number: int, request: Request, me: Me) -> RunView:
    return pipeline(request).cancel(name, number, by=me.name)


@router.post("/stages/{stage}/approve")
def approve(name: str, stage: str, request: Request, me: Me) -> RunView:
    """Pass the gate; the approval is recorded with the approver's name."""
    return pipeline(request).approve(name, stage, by=me.name)


@router.post("/stages/{stage}/promote", status_code=202)
def promote(name: str, stage: str, body: PromoteRequest, request: Request, me: Me) -> RunView:
    return pipeline(request).promote(name, stage, body.source, by=me.name)
