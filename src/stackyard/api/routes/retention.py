"""``/api/v1/platform/disk`` and ``/api/v1/platform/retention``: disk use, and a retention run.

``stackyard prune`` posts a run (``dry_run`` shows the plan only); ``stackyard doctor`` and
the console read the disk use and the last run's report.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.pipeline.services import Services

router = APIRouter(prefix="/platform", tags=["retention"])


class DiskUse(BaseModel):
    parts: dict[str, int]
    keep_releases: int
    last_retention: dict[str, Any] | None


def services(request: Request) -> Services:
    found: Services = request.app.state.context.services
    return found


@router.get("/disk")
def disk_use(request: Request) -> DiskUse:
    retention = services(request).retention
    return DiskUse(
        parts=retention.disk_use(),
        keep_releases=retention.keep_releases,
        last_retention=retention.last_report(),
    )


@router.post("/retention")
def run_retention(request: Request, dry_run: bool = False) -> dict[str, Any]:
    return services(request).retention.run(dry_run=dry_run).to_dict()
