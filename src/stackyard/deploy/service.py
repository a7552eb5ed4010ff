"""Deployments as the API and the console see them: request one, list tasks, ``check``.

Requests are recorded in the store first; the controller's stage loop then does the work,
so a request survives a restart of the control plane. Task health everywhere (``tasks``,
``check``, the console's overview) is the controller's judgement, HTTP checks included.
Releases (pipeline/releases.py) own rollbacks and the stage tag; this service only deploys.
"""

from __future__ import annotations

import builtins
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy import records
from stackyard.deploy.controller import Controller, StageKey
from stackyard.deploy.domains import (
    DomainList,
    add_domain,
    domain_views,
    remove_domain,
    route_of,
)
from stackyard.deploy.overview import Overview, TaskCount, stack_rows
from stackyard.deploy.plan import TaskHealth
from stackyard.deploy.records import DeploymentView
from stackyard.deploy.targetengines import on_target
from stackyard.deploy.traffic import StageTraffic, TrafficReport
from stackyard.deploy.trafficstore import TrafficCounter
from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_RELEASE,
    LABEL_STACK,
    LABEL_STAGE,
    Engine,
    TaskInfo,
    TaskLog,
    TaskState,
)
from stackyard.errors import NotFoundError, StackyardError, UsageError
from stackyard.router.base import AccessRecord as AccessRecord  # for the API
from stackyard.router.base import Route
from stackyard.settings import Settings
from stackyard.stacks.service import StackService
from stackyard.stacks.stages import newest_build, require_stage, stage_names
from stackyard.store.models import Deployment, Event, RetiredStage, Stack, StageRoute

log = logging.getLogger(__name__)

# A task serves when it runs and passes its health check, or has none to pass: its health
# is the controller's judgement, or the engine's own before a stage loop has judged it.
SERVING_HEALTH = frozenset({str(TaskHealth.HEALTHY), "none"})


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
    node: str = ""  # the node's id, on an engine with nodes
    node_name: str = ""  # its host name
    error: str = ""  # the engine's word on it: why it ended, or what a moving task waits for


class TaskCheck(BaseModel):
    id: str
    digest: str
    match: bool
    node: str = ""
    address: str = ""


class StageEvent(BaseModel):
    """Something the platform saw or did to a stage outside a deployment: a task replaced
    (``heal``), a node lost (``node``)."""

    at: datetime
    kind: str
    message: str


class CheckView(BaseModel):
    stack: str
    stage: str
    release: int | None
    digest: str | None
    tasks: list[TaskCheck]
    desired: int
    converged: bool
    deployment: str | None
    # Tasks on their way that are not running (moving): "NAME moving: what it waits for".
    waiting: list[str] = []


class StageUrl(BaseModel):
    stack: str
    stage: str
    url: str | None


class StageSummary(BaseModel):
    """One stage of a stack at a glance: what it runs, where, how its tasks are, its
    newest deployment and its URL (``stackyard stacks show``, ``stages list``)."""

    stage: str
    target: str
    release: int | None  # the current release: its last deployment completed
    undeployed_release: int | None  # the newest release, when it was never deployed
    digest: str | None
    commit: str
    desired: int
    running: int
    healthy: int
    deployment: int | None  # the newest deployment, with its state and reason
    deployment_status: str | None
    deployment_reason: str
    url: str | None


class StageSummaries(BaseModel):
    stack: str
    stages: list[StageSummary]
    engine_error: str | None = None  # an engine did not answer: its tasks are not counted


class StageRetired(BaseModel):
    stack: str
    stage: str
    # What could not be removed yet (an engine or router that did not answer): the
    # platform removes it once they answer.
    left: list[str] = []


class DeployService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        controller: Controller,
        settings: Settings,
        counter: TrafficCounter | None = None,
    ) -> None:
        self._sessions = sessions
        self._controller = controller
        self._settings = settings
        # The traffic store; without one given (tests), one that counts only when read.
        self.counter = counter or TrafficCounter(sessions, controller.router, interval=0)

    def ping(self, stack_name: str, stage: str, release_number: int | None = None) -> None:
        """ComponentError unless the engine that release (default: the stage's latest) runs
        on answers, the platform's own or its target's (named, with what to do): before
        anything is recorded or moved. Another target's engine being down is not this
        stage's business."""
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            release = records.find_release(session, stack.id, stage, release_number)
            target = records.stage_config(release).target
        self._controller.engines.ping(target)

    def require_image(
        self,
        stack_name: str,
        stage: str,
        release_number: int | None = None,
        *,
        from_home: bool = False,
    ) -> None:
        """Refuse, before anything is recorded or moved, a release (default: the stage's
        latest) whose image the registry no longer has: one HEAD of its manifest in the
        registry its target's engine pulls from (``from_home``: the stack's own registry,
        where a rollback copies it from). The engine's own copy does not count: Docker
        20.10 starts a digest it pulled once even after the registry deleted it, and the
        registry decides what is deployable. A registry that does not answer (or refuses
        the question) is not a "no": the deploy goes on (the engine starts its copy if it
        has one), and the platform log says so."""
        with self._sessions() as session:
            self._stage(session, stack_name, stage)
        answer = self._controller.image_check.ask(
            stack_name, stage, release_number, from_home=from_home
        )
        if answer.gone:
            raise answer.refusal()
        if answer.present is None:
            log.warning(
                "%s/%s release %d: %s; deploying anyway: the engine starts its own copy if "
                "it has one",
                stack_name,
                stage,
                answer.release,
                answer.unsure(),
            )

    def deploy(
        self, stack_name: str, stage: str, release_number: int | None, *, trigger: str
    ) -> DeploymentView:
        """Record a deployment of the stage's latest (or given) release; the loop runs it.

        The registry tag ``<stage>`` is the releases' business: to deploy an older release,
        go through ``RedeployService.deploy``, which moves the tag first.
        """
        self.ping(stack_name, stage, release_number)  # a clear error now, not a stuck one later
        self.require_image(stack_name, stage, release_number)
        with self._sessions.begin() as session:
            stack = self._stage(session, stack_name, stage)
            release = records.find_release(session, stack.id, stage, release_number)
            deployment = records.create(
                session,
                stack.id,
                stage,
                release,
                trigger=trigger,
                log_dir=records.log_dir(self._settings.logs_dir, stack_name, stage),
            )
            view = records.view(deployment, stack_name)
        self._controller.wake(StageKey(stack_name, stage))
        return view

    def list(self, stack_name: str, stage: str) -> builtins.list[DeploymentView]:
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            rows = session.scalars(
                select(Deployment)
                .where(Deployment.stack_id == stack.id, Deployment.stage == stage)
                .order_by(Deployment.number.desc())
            )
            return [records.view(row, stack_name) for row in rows]

    def events(self, stack_name: str, stage: str, limit: int = 20) -> builtins.list[StageEvent]:
        """The stage's latest events (heals, lost nodes), newest first."""
        with self._sessions() as session:
            self._stage(session, stack_name, stage)
            rows = session.scalars(
                select(Event)
                .where(Event.subject == str(StageKey(stack_name, stage)))
                .order_by(Event.id.desc())
                .limit(limit)
            )
            return [StageEvent(at=row.at, kind=row.kind, message=row.message) for row in rows]

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

    # -- tasks and their health: one path for `tasks`, `check` and the console

    def tasks(self, stack_name: str, stage: str) -> builtins.list[TaskView]:
        """The stage's tasks, as its target's engine lists them."""
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            target = records.stage_target(session, stack.id, stage)
        engines = self._controller.engines
        try:
            engine = engines.engine(target)
        except StackyardError as exc:
            raise on_target(target, exc) from exc
        labels = {LABEL_STACK: stack_name, LABEL_STAGE: stage}
        try:
            views = self._task_views(labels, [engine])
        except StackyardError as exc:
            raise on_target(target, exc) from exc
        return views.get((stack_name, stage), [])

    def task_logs(self, task_id: str, *, tail: int | None, follow: bool) -> TaskLog:
        """One task's output lines (as ``tasks`` lists it), oldest first, from the engine
        it lives on; unmasked. Close it when done: a followed log holds the engine's
        connection until then (or until the task ends)."""
        engine = self._controller.engines.engine_of(task_id)
        return engine.logs(task_id, tail=tail, follow=follow)

    @staticmethod
    def serving(task: TaskView) -> bool:
        """Whether the task counts as healthy, in the console and for ``tasks`` alike."""
        return task.state == "running" and task.health in SERVING_HEALTH

    def overview(self, only: str | None = None) -> Overview:
        """Every stack (or only the one named) with each stage's release, desired and
        serving tasks and latest deployment: the console's grid, in one call per engine in use."""
        labels = {LABEL_STACK: only} if only is not None else {}
        views: dict[tuple[str, str], builtins.list[TaskView]] = {}
        problems: builtins.list[str] = []
        for target, engine in self._controller.engines.followed():
            try:
                found = self._task_views(labels, [engine])
            except StackyardError as exc:
                # The page still shows what the store knows, and says why counts are missing.
                problems.append(on_target(target, exc).message)
                continue
            for key, listed in found.items():  # a stage that moved has tasks on both
                known = {t.id for t in views.get(key, [])}  # two targets may name one engine
                views.setdefault(key, []).extend(t for t in listed if t.id not in known)
        engine_error = "; ".join(problems) or None
        counts = {
            key: TaskCount(
                running=sum(1 for t in tasks if t.state == "running"),
                healthy=sum(1 for t in tasks if self.serving(t)),
            )
            for key, tasks in views.items()
        }
        with self._sessions() as session:
            rows = stack_rows(session, counts, only=only)
        return Overview(rows, engine_error)

    def stage_summaries(self, stack_name: str) -> StageSummaries:
        """Every stage of the stack, in order: the console grid's cells (one engine call per
        target in use), with each stage's target and URL."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
        overview = self.overview(only=stack_name)
        cells = overview.stacks[0].stages if overview.stacks else []
        summaries = []
        with self._sessions() as session:
            for cell in cells:
                _, route = self._route(session, stack, cell.stage)
                summaries.append(
                    StageSummary(
                        stage=cell.stage,
                        target=records.stage_target(session, stack.id, cell.stage),
                        release=cell.release,
                        undeployed_release=cell.undeployed_release,
                        digest=cell.digest,
                        commit=cell.commit,
                        desired=cell.desired,
                        running=cell.running,
                        healthy=cell.healthy,
                        deployment=cell.rollout_number,
                        deployment_status=cell.rollout,
                        deployment_reason=cell.rollout_reason,
                        url=self._controller.router.url(route) if route is not None else None,
                    )
                )
        return StageSummaries(
            stack=stack_name, stages=summaries, engine_error=overview.engine_error
        )

    def _task_views(
        self, labels: Mapping[str, str], engines: Sequence[Engine]
    ) -> dict[tuple[str, str], builtins.list[TaskView]]:
        """The platform's tasks matching ``labels`` on ``engines`` (one call each), by
        (stack, stage), oldest first, each with the health its stage loop last judged."""
        now = datetime.now(UTC)
        tasks: builtins.list[TaskInfo] = []
        names: dict[str, str] = {}
        for engine in engines:
            tasks.extend(
                engine.list({LABEL_PLATFORM: self._controller.settings.platform_id, **labels})
            )
            if engine.supports_nodes:
                names.update({n.id: n.name for n in engine.nodes()})
        grouped: dict[tuple[str, str], builtins.list[TaskInfo]] = defaultdict(builtins.list)
        for task in tasks:
            grouped[(task.labels.get(LABEL_STACK, ""), task.labels.get(LABEL_STAGE, ""))].append(
                task
            )
        views = {}
        for (stack, stage), found in grouped.items():
            judged = self._controller.task_health(StageKey(stack, stage))
            listed = [
                _task_view(task, str(judged.get(task.id, task.health)), now, names)
                for task in found
            ]
            views[(stack, stage)] = sorted(listed, key=lambda v: v.started_at or now)
        return views

    def check(self, stack_name: str, stage: str) -> CheckView:
        """The stage's digest against every running task's digest."""
        with self._sessions() as session:
            stack = self._stage(session, stack_name, stage)
            current = records.current_release(session, stack.id, stage)
            active = records.active(session, stack.id, stage)
            desired = records.stage_config(current).replicas if current else 0
        found = self.tasks(stack_name, stage)
        running = [t for t in found if t.state == "running"]
        waiting = [
            f"{t.name} {t.state}" + (f": {t.error}" if t.error else "")
            for t in found
            if t.state == str(TaskState.MOVING)
        ]
        digest = current.digest if current else None
        checks = [
            TaskCheck(
                id=t.id, digest=t.digest, match=t.digest == digest, node=t.node, address=t.address
            )
            for t in running
        ]
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
            waiting=waiting,
        )

    def url(self, stack_name: str, stage: str) -> StageUrl:
        """The router's address of the stage: https://<host> once it has a certificate
        mode, http://<host>, or http://127.0.0.1:<port>."""
        with self._sessions() as session:
            _, route = self._route(session, self._stage(session, stack_name, stage), stage)
        if route is None:
            return StageUrl(stack=stack_name, stage=stage, url=None)
        return StageUrl(stack=stack_name, stage=stage, url=self._controller.router.url(route))

    def access_records(self, stack_name: str, stage: str) -> builtins.list[AccessRecord]:
        """The stage's requests from the router's access log, oldest first; unmasked."""
        with self._sessions() as session:
            _, route = self._route(session, self._stage(session, stack_name, stage), stage)
        router = self._controller.router
        if route is None or not router.supports_access_logs:
            return []
        return router.access_records(route)

    def traffic(self, stack_name: str, stage: str | None, minutes: int) -> TrafficReport:
        """Each served stage's requests of the last ``minutes`` minutes, per minute and
        release, from the traffic store (deploy/trafficstore.py), counted up to now first;
        a stage the router keeps no access log of has none."""
        if not 1 <= minutes <= self.counter.retention_days * 24 * 60:
            days = self.counter.retention_days
            raise UsageError(
                f"traffic of the last {minutes} minutes is out of range",
                hint=f"give --minutes 1 to {days * 24 * 60}, or --since up to {days}d "
                f"(the traffic retention, {days} days)",
            )
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            if stage is not None:
                require_stage(session, stack, stage)
            query = select(StageRoute.stage).where(
                StageRoute.stack_id == stack.id,
                (StageRoute.host.is_not(None)) | (StageRoute.port.is_not(None)),
            )
            if stage is not None:
                query = query.where(StageRoute.stage == stage)
            stages = list(session.scalars(query.order_by(StageRoute.stage)))
            stack_id = stack.id
        self.counter.count()
        return TrafficReport(
            stack=stack_name,
            since=since,
            stages=[
                StageTraffic(
                    stage=name, minutes=self.counter.minutes(stack_id, name, since.timestamp())
                )
                for name in stages
            ],
        )

    def domains(self, stack_name: str) -> DomainList:
        """Every host name of the stack's stages, with its certificate's state."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            rows = list(session.scalars(select(StageRoute).where(StageRoute.stack_id == stack.id)))
            session.expunge_all()
        views = domain_views(stack_name, rows, self._controller.router)
        return DomainList(stack=stack_name, domains=views)

    def add_domain(self, stack_name: str, stage: str, name: str) -> DomainList:
        """Serve the stage on one more name too; its loop gives the router the name."""
        with self._sessions.begin() as session:
            add_domain(session, self._stage(session, stack_name, stage), stage, name)
        self._controller.wake(StageKey(stack_name, stage))
        return self.domains(stack_name)

    def remove_domain(self, stack_name: str, stage: str, name: str) -> DomainList:
        with self._sessions.begin() as session:
            remove_domain(session, self._stage(session, stack_name, stage), stage, name)
        self._controller.wake(StageKey(stack_name, stage))
        return self.domains(stack_name)

    def retire(self, stack_name: str, stage: str, *, by: str) -> StageRetired:
        """Stop a stage that stackyard.yml no longer lists (``stackyard stages remove``):
        its loop, its tasks on every engine and its route go; its releases and deployments
        stay as history, and it is no longer one of the stack's stages (nor adopted at a
        start) until a build that lists it again is released to it. Refused for a stage
        the newest successful build's stackyard.yml lists: that one is for the file."""
        with self._sessions.begin() as session:
            stack = self._stage(session, stack_name, stage)
            newest = newest_build(session, stack.id)
            if stage in stage_names(newest.config if newest is not None else None):
                where = f"at build {newest.number}" if newest is not None else "by default"
                raise UsageError(
                    f"stage {stage} of {stack_name} is in stackyard.yml ({where}): a stage "
                    "the file lists is not removed by hand",
                    hint=f"remove it from stackyard.yml, push, and once that build succeeds: "
                    f"stackyard stages remove {stack_name} {stage}",
                )
            row, route = self._route(session, stack, stage)
            if row is not None:
                session.delete(row)
            session.add(RetiredStage(stack_id=stack.id, stage=stage, retired_by=by))
        left: builtins.list[str] = []
        try:
            self._controller.retire(StageKey(stack_name, stage), [route] if route else [])
        except StackyardError as exc:
            left.append(exc.message)
        return StageRetired(stack=stack_name, stage=stage, left=left)

    @staticmethod
    def _route(
        session: Session, stack: Stack, stage: str
    ) -> tuple[StageRoute | None, Route | None]:
        """The stage's route row, and the route it says the router serves (None before the
        stage's first deployment gave it an address)."""
        row = session.scalar(
            select(StageRoute).where(StageRoute.stack_id == stack.id, StageRoute.stage == stage)
        )
        route = route_of(stack.name, row) if row and (row.host or row.port) else None
        return row, route

    @staticmethod
    def _stage(session: Session, stack_name: str, stage: str) -> Stack:
        """The stack's row, once ``stage`` is known to be one of its stages."""
        stack = StackService.row(session, stack_name)
        require_stage(session, stack, stage)
        return stack


def _task_view(
    task: TaskInfo, health: str, now: datetime, node_names: Mapping[str, str]
) -> TaskView:
    return TaskView(
        id=task.id,
        name=task.name,
        release=task.labels.get(LABEL_RELEASE, ""),
        digest=task.digest,
        port=task.port,
        address=str(task.address or ""),
        state=str(task.state),
        health=health,
        started_at=task.started_at,
        age_seconds=(now - task.started_at).total_seconds() if task.started_at else None,
        node=task.node,
        node_name=node_names.get(task.node, ""),
        error=task.error,
    )
