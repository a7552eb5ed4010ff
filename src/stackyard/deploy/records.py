"""Deployment records in the store: create, queue, supersede, finish, and the views of them.

The stage loops (deploy/controller.py), the deploy service, releases (a rollback queues
its deployment) and the console's overview all use these functions; all state a restarted
control plane needs to carry on lives in these rows and in the task labels.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, Select, Subquery, and_, func, select
from sqlalchemy.orm import Session

from stackyard.config.models import StageConfig
from stackyard.errors import NotFoundError
from stackyard.store.models import Deployment, Release
from stackyard.store.numbers import next_number

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


def stage_target(session: Session, stack_id: int, stage: str) -> str:
    """The target the stage's tasks run on: its active deployment's release's, else its
    current release's (``local`` without either)."""
    deployment = active(session, stack_id, stage)
    release = (
        find_release(session, stack_id, stage, deployment.release_number)
        if deployment is not None
        else current_release(session, stack_id, stage)
    )
    return stage_config(release).target if release is not None else "local"


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


def log_dir(logs_dir: Path, stack: str, stage: str) -> Path:
    """Where a stage's deployment logs go, one ``<number>.log`` each."""
    return logs_dir / "deployments" / stack / stage


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
    number = next_number(session, Deployment, stack_id, stage)
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


def current_release(session: Session, stack_id: int, stage: str) -> Release | None:
    """The release the stage serves: the one of its last COMPLETED deployment."""
    return current_releases(session, [stack_id], stage).get((stack_id, stage))


def current_releases(
    session: Session, stack_ids: list[int], stage: str | None = None
) -> dict[tuple[int, str], Release]:
    """``current_release`` of every stage of these stacks (or of ``stage`` only), in one
    query: (stack id, stage) -> the release of its last COMPLETED deployment."""
    rows = session.scalars(serving(stack_ids, stage))
    return {(row.stack_id, row.stage): row for row in rows}


def serving(stack_ids: list[int], stage: str | None = None) -> Select[Release]:
    """The query behind ``current_releases``: each stage's current release, joined with
    the COMPLETED deployment that made it current (a read model may pick its columns)."""
    done = _newest_per_stage(stack_ids, stage, "COMPLETED").subquery()
    return (
        select(Release)
        .join(
            Deployment,
            and_(
                Deployment.stack_id == Release.stack_id,
                Deployment.stage == Release.stage,
                Deployment.release_number == Release.number,
            ),
        )
        .join(done, _is_newest(done))
    )


def newest(stack_ids: list[int]) -> Select[Deployment]:
    """The newest deployment of every stage of these stacks, whatever its status."""
    latest = _newest_per_stage(stack_ids, None).subquery()
    return select(Deployment).join(latest, _is_newest(latest))


def undeployed(stack_ids: list[int]) -> Select[int, str, int]:
    """Each stage whose newest release was never deployed (``stackyard release`` records
    and moves the tag; ``deploy`` rolls it out): its stack id, stage and that number."""
    newest_release = (
        select(Release.stack_id, Release.stage, func.max(Release.number).label("number"))
        .where(Release.stack_id.in_(stack_ids))
        .group_by(Release.stack_id, Release.stage)
        .subquery()
    )
    deployed = select(Deployment.id).where(
        Deployment.stack_id == newest_release.c.stack_id,
        Deployment.stage == newest_release.c.stage,
        Deployment.release_number == newest_release.c.number,
    )
    return select(newest_release.c.stack_id, newest_release.c.stage, newest_release.c.number).where(
        ~deployed.exists()
    )


def _is_newest(newest: Subquery) -> ColumnElement[bool]:
    """The join condition: a deployment is the one ``_newest_per_stage`` found."""
    return and_(
        Deployment.stack_id == newest.c.stack_id,
        Deployment.stage == newest.c.stage,
        Deployment.number == newest.c.number,
    )


def _newest_per_stage(
    stack_ids: list[int], stage: str | None, *statuses: str
) -> Select[int, str, int]:
    query = select(
        Deployment.stack_id, Deployment.stage, func.max(Deployment.number).label("number")
    ).where(Deployment.stack_id.in_(stack_ids))
    if stage is not None:
        query = query.where(Deployment.stage == stage)
    if statuses:
        query = query.where(Deployment.status.in_(statuses))
    return query.group_by(Deployment.stack_id, Deployment.stage)
