"""Deployments as the API sees them: request one, roll back, list tasks, and ``check``.

Requests are recorded in the store first; the controller's stage loop then does the work,
so a request survives a restart of the control plane.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy import records
from stackyard.deploy.controller import Controller, StageKey, address
from stackyard.deploy.records import DeploymentView
from stackyard.engines.base import LABEL_PLATFORM, LABEL_RELEASE, LABEL_STACK, LABEL_STAGE
from stackyard.errors import NotFoundError, UsageError
from stackyard.pipeline.releases import ReleaseService
from stackyard.pipeline.stacks import StackService
from stackyard.pipeline.stages import require_stage
from stackyard.settings import Settings
from stackyard.store.models import Deployment, Release, Stack, StageRoute


class TaskView(BaseModel):
    id: str
    name: str
    release: str
    digest: str
    port: int | None
    address: str
    state: str
    health: str
    started_at: datetime | None
    age_seconds: float | None


class TaskCheck(BaseModel):
    id: str
    digest: str
    match: bool


class CheckView(BaseModel):
    stack: str
    stage: str
    release: int | None
    digest: str | None
    tasks: list[TaskCheck]
    desired: int
    converged: bool
    deployment: str | None


class StageUrl(BaseModel):
    stack: str
    stage: str
    url: str | None


class DeployService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        controller: Controller,
        releases: ReleaseService,
        settings: Settings,
    ) -> None:
        self._sessions = sessions
        self._controller = controller
        self._releases = releases
        self._settings = settings

    def _log_dir(self, stack: str, stage: str) -> Path:
        return self._settings.logs_dir / "deployments" / stack / stage

    def deploy(
        self, stack_name: str, stage: str, release_number: int | None, *, trigger: str
    ) -> DeploymentView:
        """Record a deployment of the stage's latest (or given) release; the loop runs it."""
        self._controller.engine.ping()  # a clear error now, not a stuck deployment later
        with self._sessions.begin() as session:
            stack = self._stage(session, stack_name, stage)
            release = records.find_release(session, stack.id, stage, release_number)
            if release_number is not None:
                latest = self._releases.latest(session, stack.id, stage)
                if latest is not None and latest.number != release.number:
                    # The stage tag follows what the stage runs.
                    self._releases.retag_stage(stack_name, stage, release.digest)
            deployment = records.create(
                session,
                stack.id,
                stage,
                release,
                trigger=trigger,
                log_dir=self._log_dir(stack_name, stage),
            )
            view = records.view(deployment, stack_name)
        self._controller.wake(StageKey(stack_name, stage))
        return view

    def rollback(
        self, stack_name: str, stage: str, to: int | None, *, trigger: str = "rollback"
    ) -> DeploymentView:
        """A new release copying release ``to`` (default: the one before the current),
        image and config, deployed."""
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            number = to if to is not None else self._previous_release(session, stack.id, stage)
        copy = self._releases.copy(stack_name, stage, number, source="rollback", created_by="api")
        return self.deploy(stack_name, stage, copy.number, trigger=trigger)

    def rollback_for_controller(
        self, stack_name: str, stage: str, number: int, source: str
    ) -> Release:
        """Called by a stage loop when a deployment failed: copy and queue, no engine ping."""
        copy = self._releases.copy(
            stack_name, stage, number, source=source, created_by="controller"
        )
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            records.create(
                session,
                stack.id,
                stage,
                copy,
                trigger="automatic rollback",
                log_dir=self._log_dir(stack_name, stage),
            )
        return copy

    def _previous_release(self, session: Session, stack_id: int, stage: str) -> int:
        current = records.current_release(session, stack_id, stage)
        for row in records.completed(session, stack_id, stage):
            if current is None or row.release_number != current.number:
                release = records.find_release(session, stack_id, stage, row.release_number)
                if (
                    current is None
                    or release.digest != current.digest
                    or release.config != current.config
                ):
                    return row.release_number
        raise UsageError(
            f"stage {stage} has no earlier completed release to roll back to",
            hint="pass --to N to pick a release (see `stackyard releases STACK --stage STAGE`)",
        )

    def list(self, stack_name: str, stage: str) -> list[DeploymentView]:
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            rows = session.scalars(
                select(Deployment)
                .where(Deployment.stack_id == stack.id, Deployment.stage == stage)
                .order_by(Deployment.number.desc())
            )
            return [records.view(row, stack_name) for row in rows]

    def get(self, stack_name: str, stage: str, number: int) -> DeploymentView:
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            row = session.scalar(
                select(Deployment).where(
                    Deployment.stack_id == stack.id,
                    Deployment.stage == stage,
                    Deployment.number == number,
                )
            )
            if row is None:
                raise NotFoundError(f"stage {stage} of {stack_name} has no deployment {number}")
            return records.view(row, stack_name)

    def tasks(self, stack_name: str, stage: str) -> builtins.list[TaskView]:
        with self._sessions() as session:
            self._stage(session, stack_name, stage)
        labels = {
            LABEL_PLATFORM: self._controller.settings.platform_id,
            LABEL_STACK: stack_name,
            LABEL_STAGE: stage,
        }
        now = datetime.now(UTC)
        judged = self._controller.task_health(StageKey(stack_name, stage))
        views = []
        for task in self._controller.engine.list(labels):
            views.append(
                TaskView(
                    id=task.id,
                    name=task.name,
                    release=task.labels.get(LABEL_RELEASE, ""),
                    digest=task.digest,
                    port=task.port,
                    address=address(task),
                    state=str(task.state),
                    health=str(judged.get(task.id, task.health)),
                    started_at=task.started_at,
                    age_seconds=(now - task.started_at).total_seconds()
                    if task.started_at
                    else None,
                )
            )
        return sorted(views, key=lambda v: v.started_at or now)

    def check(self, stack_name: str, stage: str) -> CheckView:
        """The stage's digest against every running task's digest."""
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            current = records.current_release(session, stack.id, stage)
            active = records.active(session, stack.id, stage)
            desired = records.stage_config(current).replicas if current else 0
        running = [t for t in self.tasks(stack_name, stage) if t.state == "running"]
        digest = current.digest if current else None
        checks = [TaskCheck(id=t.id, digest=t.digest, match=t.digest == digest) for t in running]
        converged = (
            current is not None
            and active is None
            and len(checks) == desired
            and all(c.match for c in checks)
        )
        return CheckView(
            stack=stack_name,
            stage=stage,
            release=current.number if current else None,
            digest=digest,
            tasks=checks,
            desired=desired,
            converged=converged,
            deployment=f"{active.number} {active.status}" if active else None,
        )

    def url(self, stack_name: str, stage: str) -> StageUrl:
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            row = session.scalar(
                select(StageRoute).where(StageRoute.stack_id == stack.id, StageRoute.stage == stage)
            )
        if row is None:
            return StageUrl(stack=stack_name, stage=stage, url=None)
        url = f"http://{row.host}" if row.host else f"http://127.0.0.1:{row.port}"
        return StageUrl(stack=stack_name, stage=stage, url=url)

    @staticmethod
    def _stage(session: Session, stack_name: str, stage: str) -> Stack:
        """The stack's row, once ``stage`` is known to be one of its stages."""
        stack = StackService.row(session, stack_name)
        require_stage(session, stack, stage)
        return stack
