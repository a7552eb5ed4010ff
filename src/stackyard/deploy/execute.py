"""Carry out a stage's plan (deploy/decide.py) through the Engine and Router seams and the store.

The executor decides nothing: it claims the deployment, records failures and heal events,
stores and sets the route, stops, removes and starts tasks, updates the deployment's record
and calls the rollback it was told to. The notifications these changes set off are written
to the outbox with them: a deployment's end in the transaction that records it, a
rollback's outcome right after the rollback (notify/outbox.py; nothing is sent here).
It says what each action did (a task started, the route set, the rollback made), and keeps
the stage loop's memory in step with what has really been done, so a step that fails
half-way is taken up again correctly.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.deploy.decide import (
    DeploymentStatus,
    DeploymentUpdate,
    RouteChange,
    RouteRow,
    StageMemory,
    StagePlan,
    StageView,
    StartTasks,
    TaskRecipe,
)
from stackyard.deploy.deploylog import StageLog
from stackyard.deploy.health import ProbeScheduler
from stackyard.deploy.imagecheck import ImageAnswer
from stackyard.deploy.keys import StageKey
from stackyard.deploy.portpool import TaskPorts
from stackyard.deploy.targetengines import TargetEngines, on_target
from stackyard.engines.base import (
    LABEL_DEPLOYMENT,
    LABEL_PLATFORM,
    LABEL_PORT,
    LABEL_RELEASE,
    LABEL_STACK,
    LABEL_STAGE,
    Engine,
    NetworkMode,
    Placement,
    TaskInfo,
    TaskSpec,
)
from stackyard.errors import StackyardError
from stackyard.notify import events as notices
from stackyard.notify.outbox import Outbox
from stackyard.registry_login import RegistryLogin
from stackyard.router.base import Router
from stackyard.secrets.envfile import render_env_file
from stackyard.store.models import Deployment, Release, Stack, StageRoute

log = logging.getLogger(__name__)

Rollback = Callable[[str, str, int, str], Release]


class StageState(Protocol):
    """What the executor keeps in step: the stage loop's memory."""

    memory: StageMemory


@dataclass(frozen=True)
class Seams:
    """What every stage's executor works through, shared by all stages."""

    sessions: sessionmaker[Session]
    engines: TargetEngines  # each target's engine and task watch; a task's, by its id
    router: Router
    health: ProbeScheduler[StageKey]
    ports: TaskPorts
    # (stack, target) -> the stack's repository in the registry the target pulls from,
    # and the login the engine pulls with there
    image_url: Callable[[str, str], str]
    login: Callable[[str, str], RegistryLogin]
    platform_id: str
    network_mode: NetworkMode
    starters: ThreadPoolExecutor
    stop_task: Callable[[StageKey, str, float], None]
    rollback: Rollback
    # (stack, stage, release) -> whether the registry its target pulls from has its image
    image: Callable[[str, str, int | None], ImageAnswer]
    resolve_secrets: Callable[[str, Mapping[str, int]], dict[str, str]]
    outbox: Outbox


@dataclass
class _Started:
    started: int = 0
    failures: int = 0
    reason: str | None = None


class Executor:
    """Applies one stage's plans."""

    def __init__(self, key: StageKey, seams: Seams, log: StageLog) -> None:
        self.key = key
        self.seams = seams
        self.log = log
        # Releases whose deleted image a heal event has named (once each: a heal that cannot
        # start is tried again at once, and the event would repeat with every try).
        self._told_gone: set[tuple[int, str]] = set()

    def apply(self, view: StageView, plan: StagePlan, state: StageState) -> bool:
        """Carry ``plan`` out; False when its deployment was superseded since the view
        was taken (nothing was done: observe again)."""
        log_path = view.deployment.log_path if view.deployment else None
        if plan.begin is not None:
            if not self._claim(plan.begin.id):
                return False
            state.memory = replace(state.memory, deployment=plan.begin.id, counted=frozenset())
        for line in plan.lines:
            self.log.say(line, log_path)
        if plan.start is not None:
            self._check_image(view, plan, log_path)
        self._record_failures(plan)
        state.memory = replace(state.memory, counted=plan.counted)
        for message in plan.events:
            self.log.event(
                "heal", message, notices.task_replaced(self.key.stack, self.key.stage, message)
            )
        # The row is stored once the router has the route: a change of names that the
        # router did not take is tried again on the next look.
        if plan.route is not None:
            self._route(plan.route, state, log_path)
        if plan.route_row is not None:
            self._store_route(plan.route_row)
        for stop in plan.stop:
            state.memory = replace(state.memory, stopping=state.memory.stopping | {stop.id})
            self.seams.stop_task(self.key, stop.id, stop.timeout)
            self.log.say(f"stopping task {stop.name}", log_path)
        removal_error = self._remove(plan.remove, state)
        started = self._start(view, plan.start, log_path) if plan.start else _Started()
        if plan.deployment is not None:
            self._update(plan.deployment, started, plan)
        for line in plan.closing_lines:
            self.log.say(line, log_path)
        if plan.rollback is not None:
            self._roll_back(plan, log_path)
        if plan.deployment is not None and plan.deployment.finish is not None:
            state.memory = replace(state.memory, deployment=None)
            if log_path is not None:
                changes.end(log_path)  # a waiting run, a log follower
        if removal_error is not None:
            raise removal_error  # the rest is done; the loop retries the removal
        return True

    # -- the release's image

    def _check_image(self, view: StageView, plan: StagePlan, log_path: str | None) -> None:
        """Before tasks start, ask the registry for the release's image. A deployment's
        start is refused (NotFoundError: the step fails, and with it the deployment, before
        anything else in the plan is done); a heal goes on with the engine's own copy, and
        the stage's events say the image is gone. A registry that cannot tell is not a
        "no": the start goes on, and the log says so."""
        recipe = view.target.recipe if view.target else None
        if recipe is None:
            return
        answer = self.seams.image(self.key.stack, self.key.stage, recipe.release)
        if answer.present is None:
            line = f"{answer.unsure()}; starting the engine's own copy if it has one"
            self.log.say(line, log_path)
        if not answer.gone:
            return
        if plan.deployment is not None:
            raise answer.refusal()
        if (answer.release, answer.digest) in self._told_gone:
            return
        self._told_gone.add((answer.release, answer.digest))
        self.log.event(
            "image",
            f"release {answer.release} is served but {answer.missing}; self-healing starts "
            "the engine's own copy of it (an engine or node without one cannot start it); "
            f"{answer.hint}",
        )

    # -- the deployment's record

    def _claim(self, deployment_id: int) -> bool:
        """QUEUED -> IN_PROGRESS, unless it was superseded meanwhile."""
        with self.seams.sessions.begin() as session:
            session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id, Deployment.status == "QUEUED")
                .values(status=DeploymentStatus.IN_PROGRESS, started_at=datetime.now(UTC))
            )
            status = session.scalar(select(Deployment.status).where(Deployment.id == deployment_id))
        return status == DeploymentStatus.IN_PROGRESS

    def _record_failures(self, plan: StagePlan) -> None:
        """The failed tasks count before anything else is done: a step that breaks later
        must not count them again."""
        update = plan.deployment
        if update is None or not update.failures:
            return
        with self.seams.sessions.begin() as session:
            row = session.get(Deployment, update.id)
            if row is not None:
                row.failures += update.failures
                row.reason = update.reason or row.reason

    def _update(self, update: DeploymentUpdate, started: _Started, plan: StagePlan) -> None:
        with self.seams.sessions.begin() as session:
            row = session.get(Deployment, update.id)
            if row is None:
                return
            row.tasks_started += started.started
            row.failures += started.failures
            row.reason = started.reason or row.reason
            row.tasks_stopped += update.tasks_stopped
            row.tasks_healthy, row.tasks_routed = update.tasks_healthy, update.tasks_routed
            finish = update.finish
            if finish is None:
                return
            row.status = finish.status
            row.reason = finish.reason or row.reason
            row.finished_at = datetime.now(UTC)
            # Its notification, in the same transaction; a rollback's comes after it.
            if finish.status == DeploymentStatus.COMPLETED:
                self.seams.outbox.emit(session, notices.deployment_completed(_facts(row, self.key)))
            elif plan.rollback is None:
                outcome = finish.no_rollback or "not rolled back"
                notice = notices.deployment_failed(_facts(row, self.key), outcome)
                self.seams.outbox.emit(session, notice)

    def _roll_back(self, plan: StagePlan, log_path: str | None) -> None:
        choice = plan.rollback
        if choice is None:
            return
        failed = self._finished_facts(plan)
        try:
            restored = self.seams.rollback(self.key.stack, self.key.stage, choice.to, choice.source)
        except StackyardError as exc:
            line = f"rollback to release {choice.to} failed: {exc.message}"
            self.log.say(f"rollback to release {choice.to} failed: {exc.with_hint()}", log_path)
            self._add_reason(plan, line)
            if failed is not None:
                self._notify(notices.deployment_failed(failed, line))
            return
        self.log.say(
            f"rolled back: release {restored.number} copies release {choice.to} "
            f"({choice.digest}) and its config",
            log_path,
        )
        if failed is not None:
            notice = notices.rolled_back(
                failed, to=choice.to, digest=choice.digest, release=restored.number
            )
            self._notify(notice)

    def _add_reason(self, plan: StagePlan, line: str) -> None:
        """Say on the failed deployment's record why the stage did not go back."""
        if plan.deployment is None:
            return
        with self.seams.sessions.begin() as session:
            row = session.get(Deployment, plan.deployment.id)
            if row is not None:
                row.reason = f"{row.reason}; {line}" if row.reason else line

    def _finished_facts(self, plan: StagePlan) -> notices.DeploymentFacts | None:
        """The deployment this plan finished, as its record now says."""
        if plan.deployment is None:
            return None
        with self.seams.sessions() as session:
            row = session.get(Deployment, plan.deployment.id)
            return _facts(row, self.key) if row is not None else None

    def _notify(self, notice: notices.Notice) -> None:
        """An event recorded right after its change. The change stands whatever happens
        here: a store that refuses the event is logged, not raised."""
        try:
            self.seams.outbox.emit_now(self.seams.sessions, notice)
        except Exception as exc:
            log.warning("stage %s: cannot record the %s notification: %s", self.key,
                        notice.kind, exc)  # fmt: skip

    # -- the route

    def _store_route(self, row: RouteRow) -> None:
        with self.seams.sessions.begin() as session:
            stack_id = session.scalar(select(Stack.id).where(Stack.name == self.key.stack))
            if stack_id is None:
                return
            found = session.scalar(
                select(StageRoute).where(
                    StageRoute.stack_id == stack_id, StageRoute.stage == self.key.stage
                )
            )
            if found is None:
                found = StageRoute(stack_id=stack_id, stage=self.key.stage)
                session.add(found)
            found.port, found.host = row.port, row.host
            found.aliases, found.tls = list(row.aliases), row.tls

    def _route(self, change: RouteChange, state: StageState, log_path: str | None) -> None:
        router = self.seams.router
        shown = ", ".join(change.addresses) or "nothing"
        if change.create:
            router.ensure_route(change.route, change.addresses)
            self.log.say(f"route {router.url(change.route)} -> {shown}", log_path)
        else:
            router.set_upstreams(change.route, change.addresses)
            self.log.say(f"routing {router.url(change.route)} -> {shown}", log_path)
        now = time.monotonic()
        unrouted = dict(state.memory.unrouted_at)
        unrouted.update({task_id: now for task_id in change.leaving})
        state.memory = replace(state.memory, unrouted_at=tuple(unrouted.items()))

    # -- tasks

    def _remove(self, task_ids: tuple[str, ...], state: StageState) -> StackyardError | None:
        """Remove exited tasks; the first refusal is returned (the others still go)."""
        first: StackyardError | None = None
        for task_id in task_ids:
            watch = self.seams.engines.watch_of(task_id)  # the engine it lives on
            try:
                watch.engine.remove(task_id)
            except StackyardError as exc:
                log.warning("stage %s: cannot remove task %s: %s", self.key, task_id, exc)
                first = first or exc
                continue
            watch.drop(task_id, wake=False)
            memory = state.memory
            state.memory = replace(
                memory,
                stopping=memory.stopping - {task_id},
                unrouted_at=tuple((i, t) for i, t in memory.unrouted_at if i != task_id),
            )
        return first

    def _start(self, view: StageView, start: StartTasks, log_path: str | None) -> _Started:
        """Start ``count`` tasks of the target release on its target's engine, the engine's
        part concurrently: a 20-replica rollout should not take 20 container starts one
        after another."""
        recipe = view.target.recipe if view.target else None
        if recipe is None:
            raise StackyardError(f"stage {self.key}: nothing to start tasks from")
        result = _Started()
        try:
            watch = self.seams.engines.follow(recipe.target)
        except StackyardError as exc:  # its target was removed, or its engine cannot be made
            reason = f"cannot start a task of release {recipe.release}: {exc.with_hint()}"
            self.log.say(reason, log_path)
            if start.failures_count:
                result.failures, result.reason = start.count, reason
            return result
        engine = watch.engine

        def failed(reason: str) -> None:
            self.log.say(reason, log_path)
            if start.failures_count:
                result.failures += 1
                result.reason = reason

        specs: list[TaskSpec] = []
        constraints = view.target.settings.constraints if view.target else ()
        for index in range(start.count):
            try:
                env, files = self._task_config(recipe)
            except StackyardError as exc:
                failed(f"cannot start a task of release {recipe.release}: {exc.with_hint()}")
                continue
            node = start.nodes[index] if index < len(start.nodes) else None
            placement = Placement(node=node, constraints=constraints)
            try:
                specs.append(self._task_spec(recipe, env, files, placement))
            except StackyardError as exc:  # e.g. its target was removed
                failed(f"cannot start a task of release {recipe.release}: {exc.with_hint()}")
        if len(specs) > 1:
            engines = [engine] * len(specs)
            outcomes = list(self.seams.starters.map(self._engine_start, engines, specs))
        else:
            outcomes = [self._engine_start(engine, spec) for spec in specs]
        for spec, outcome in zip(specs, outcomes, strict=True):
            if isinstance(outcome, StackyardError):  # named by its target, and how to check it
                error = on_target(recipe.target, outcome)
                failed(f"task {spec.name} failed to start: {error.with_hint()}")
                continue
            watch.put(outcome, wake=False)
            if outcome.address is not None:
                self.seams.health.watch(self.key, outcome.id, outcome.address, recipe.health)
            where = f"{outcome.address}" if outcome.node else f"port {spec.port}"
            self.log.say(f"started task {outcome.name} on {where} ({spec.image})", log_path)
            result.started += 1
        return result

    def _engine_start(self, engine: Engine, spec: TaskSpec) -> TaskInfo | StackyardError:
        try:
            return engine.start(spec)
        except StackyardError as exc:
            return exc
        finally:
            self.seams.ports.release(spec.port)  # the task's label holds it from now on

    def _task_spec(
        self,
        recipe: TaskRecipe,
        env: dict[str, str],
        files: dict[str, str],
        placement: Placement,
    ) -> TaskSpec:
        """What to start for one task of the release, its port reserved."""
        seams, key = self.seams, self.key
        image_url = seams.image_url(key.stack, recipe.target)
        login = seams.login(key.stack, recipe.target)
        port = seams.ports.allocate()
        name = task_name(key, recipe.release, secrets.token_hex(3))
        labels = {
            LABEL_PLATFORM: seams.platform_id,
            LABEL_STACK: key.stack,
            LABEL_STAGE: key.stage,
            LABEL_RELEASE: str(recipe.release),
            LABEL_DEPLOYMENT: str(recipe.deployment),
            LABEL_PORT: str(port),
        }
        return TaskSpec(
            name=name,
            image=f"{image_url}@{recipe.digest}",
            port=port,
            labels=labels,
            env=env,
            files=files,
            network_mode=seams.network_mode,
            container_port=recipe.container_port,
            cpu=recipe.cpu,
            memory=recipe.memory,
            pids_limit=recipe.pids_limit,
            read_only=recipe.read_only,
            stop_timeout=recipe.stop_timeout,
            login=login,
            placement=placement,
        )

    def _task_config(self, recipe: TaskRecipe) -> tuple[dict[str, str], dict[str, str]]:
        """A task's environment (the snapshot's variables, then its secrets, decrypted now)
        and files (the env file, rendered now; it exists only inside the container)."""
        values = self.seams.resolve_secrets(self.key.stack, dict(recipe.secrets))
        env = {**dict(recipe.variables), **values}
        env_file = recipe.env_file
        if env_file is None:
            return env, {}
        text = render_env_file(env_file.template_path, env_file.template, env)
        return env, {env_file.path: text}


def _facts(row: Deployment, key: StageKey) -> notices.DeploymentFacts:
    return notices.DeploymentFacts(
        stack=key.stack,
        stage=key.stage,
        number=row.number,
        release=row.release_number,
        digest=row.digest,
        trigger=row.trigger,
        reason=row.reason,
    )


def task_name(key: StageKey, release: int, suffix: str) -> str:
    """``sy-<stack>-<stage>-r<release>-<suffix>``, its stack and stage part cut so that the
    whole is at most 63 characters (a Swarm service name, like a DNS label, is no longer)."""
    tail = f"-r{release}-{suffix}"
    return f"sy-{key.stack}-{key.stage}"[: 63 - len(tail)].rstrip("-") + tail
