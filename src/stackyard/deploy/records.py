"""Deployment records in the store: create, queue, supersede, finish, and the views of them.

The stage loops (deploy/controller.py) and the API both use these functions; all state a
restarted control plane needs to carry on lives in these rows and in the task labels.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stackyard.config.models import StageConfig
from stackyard.errors import NotFoundError
from stackyard.store.models import Deployment, Release

ACTIVE = ("QUEUED", "IN_PROGRESS")
TERMINAL = ("COMPLETED", "FAILED", "SUPERSEDED")


class DeploymentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    stack: str = ""
    stage: str
    number: int
    release_number: int
    digest: str
    status: str
    reason: str
    trigger: str
    failures: int
    desired: int
    tasks_started: int
    tasks_healthy: int
    tasks_routed: int
    tasks_stopped: int
    log_path: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def view(deployment: Deployment, stack: str) -> DeploymentView:
    result = DeploymentView.model_validate(deployment)
    result.stack = stack
    return result


def stage_config(release: Release) -> StageConfig:
    """The stage settings a release shipped with (replicas, resources, health, deploy)."""
    return StageConfig.model_validate(release.config.get("stage") or {"name": release.stage})


def find_release(session: Session, stack_id: int, stage: str, number: int | None) -> Release:
    query = select(Release).where(Release.stack_id == stack_id, Release.stage == stage)
    if number is not None:
        query = query.where(Release.number == number)
    release = session.scalar(query.order_by(Release.number.desc()))
    if release is None:
        what = f"release {number}" if number is not None else "any release"
        raise NotFoundError(
            f"stage {stage} has no {what}",
            hint="list them with `stackyard releases STACK --stage STAGE`",
        )
    return release


def create(
    session: Session, stack_id: int, stage: str, release: Release, *, trigger: str, log_dir: Path
) -> Deployment:
    """A QUEUED deployment; an older one still QUEUED for the stage is superseded."""
    for waiting in session.scalars(
        select(Deployment).where(
            Deployment.stack_id == stack_id,
            Deployment.stage == stage,
            Deployment.status == "QUEUED",
        )
    ):
        waiting.status = "SUPERSEDED"
        waiting.finished_at = datetime.now(UTC)
    number = (
        session.scalar(
            select(func.max(Deployment.number)).where(
                Deployment.stack_id == stack_id, Deployment.stage == stage
            )
        )
        or 0
    ) + 1
    deployment = Deployment(
        stack_id=stack_id,
        stage=stage,
        number=number,
        release_number=release.number,
        digest=release.digest,
        status="QUEUED",
        reason="",
        trigger=trigger,
        desired=stage_config(release).replicas,
        log_path=str(log_dir / f"{number}.log"),
    )
    session.add(deployment)
    session.flush()
    return deployment


def active(session: Session, stack_id: int, stage: str) -> Deployment | None:
    """The IN_PROGRESS deployment, else the oldest QUEUED one."""
    rows = session.scalars(
        select(Deployment)
        .where(
            Deployment.stack_id == stack_id,
            Deployment.stage == stage,
            Deployment.status.in_(ACTIVE),
        )
        .order_by(Deployment.number)
    ).all()
    for row in rows:
        if row.status == "IN_PROGRESS":
            return row
    return rows[0] if rows else None


def completed(session: Session, stack_id: int, stage: str) -> list[Deployment]:
    """The stage's COMPLETED deployments, newest first."""
    return list(
        session.scalars(
            select(Deployment)
            .where(
                Deployment.stack_id == stack_id,
                Deployment.stage == stage,
                Deployment.status == "COMPLETED",
            )
            .order_by(Deployment.number.desc())
        )
    )


def last_completed(session: Session, stack_id: int, stage: str) -> Deployment | None:
    found = completed(session, stack_id, stage)
    return found[0] if found else None


def current_release(session: Session, stack_id: int, stage: str) -> Release | None:
    """The release the stage serves: the one of its last COMPLETED deployment."""
    done = last_completed(session, stack_id, stage)
    if done is None:
        return None
    return find_release(session, stack_id, stage, done.release_number)
