"""Observe one stage: the store's records, the engine's tasks (from the shared task watch),
their health judgements and the router's upstreams, read into one plain ``StageView``.

The stage loop (deploy/loops.py) calls ``StageObserver.observe`` once per step and hands
the view to the pure ``decide`` (deploy/decide.py). Observing changes nothing, except that
it tells the health scheduler which tasks the stage has, so it probes exactly those.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.config.models import StageConfig
from stackyard.deploy import records
from stackyard.deploy.decide import (
    NO_RELEASE,
    Blocked,
    DeploymentFacts,
    DeploymentStatus,
    EnvFile,
    ReleaseFacts,
    RouteFacts,
    StageMemory,
    StageSettings,
    StageView,
    Target,
    TaskFacts,
    TaskRecipe,
)
from stackyard.deploy.health import HealthSettings, Judgement, ProbeScheduler, from_engine
from stackyard.deploy.keys import Domains, StageKey, stage_route
from stackyard.deploy.plan import TaskHealth
from stackyard.deploy.portpool import route_port
from stackyard.deploy.targetengines import LOCAL, TargetEngines
from stackyard.engines.base import LABEL_RELEASE, Engine, NodeInfo, NodeUse, TaskInfo, TaskState
from stackyard.errors import StackyardError, require
from stackyard.images.dockerize.python import platform_hosts
from stackyard.ports import port_free
from stackyard.router.base import Router, TlsMode
from stackyard.secrets.masking import SecretMasker
from stackyard.store.models import Deployment, Release, Stack, StageRoute

log = logging.getLogger(__name__)

LAST_LINES = 5  # of a failed task's output, in the reason of its failure


@dataclass(frozen=True)
class _Records:
    """What the store says about the stage, read in one session."""

    stack_id: int
    release: Release
    deployment: Deployment | None
    last_completed: Release | None
    route: StageRoute | None
    labelled: tuple[Release, ...]
    route_ports: tuple[int, ...]


class StageObserver:
    """Reads one stage's state; ``observe`` returns it as a StageView."""

    def __init__(
        self,
        key: StageKey,
        *,
        sessions: sessionmaker[Session],
        engines: TargetEngines,
        health: ProbeScheduler[StageKey],
        router: Router,
        route_ports: tuple[int, int],
        masker: Callable[[], SecretMasker],
        domains: Domains | None = None,
    ) -> None:
        self.key = key
        self._sessions = sessions
        self._engines = engines
        self._health = health
        self._router = router
        self._route_ports = route_ports
        self._masker = masker
        self._domains = domains or Domains()

    def observe(self, memory: StageMemory, now: float) -> StageView:
        """The stage as it is now. The engine's or the router's failure to answer (or a
        missing ability) is part of the view (``blind``), so that a deployment still begins,
        and then fails at once or within its error budget; the store's is raised."""
        blind = None
        nodes: list[NodeInfo] | None = None
        use: dict[str, NodeUse] = {}
        tasks = self._engines.stage_tasks(self.key)
        found = self._records(tasks)
        # The stage runs on its release's target's engine (made and followed on first use).
        target = records.stage_config(found.release).target if found is not None else LOCAL
        try:
            watch = self._engines.answering(target)
            if target != LOCAL and {t.id for t in watch.tasks(self.key)} - {t.id for t in tasks}:
                tasks = self._engines.stage_tasks(self.key)  # its engine was listed just now
                found = self._records(tasks)
            nodes = watch.nodes()
            use = watch.node_use()  # every task on each node, of any platform or none
        except StackyardError as exc:  # the engine's state is unknown (not listed, or down)
            tasks, blind = [], _blind(exc)
        where = _places(nodes)
        masker = functools.cache(self._masker)  # made only when a bad task's output is read
        if found is None:
            facts = tuple(
                self._task_facts(t, {}, memory, masker, where, read_logs=False) for t in tasks
            )
            return StageView(self.key.stack, self.key.stage, now, memory, tasks=facts, blind=blind)
        deployment = deployment_facts(found.deployment) if found.deployment else None
        if blind is not None:
            return StageView(
                self.key.stack, self.key.stage, now, memory, deployment=deployment, blind=blind
            )
        stage = records.stage_config(found.release)
        settings = stage_settings(stage, self.key, self._domains, found.route)
        try:
            self._require_abilities(stage, settings, self._engines.engine(target))
            route = self._route(found, stage, settings)
        except StackyardError as exc:  # the router does not answer, or cannot serve it
            return StageView(
                self.key.stack,
                self.key.stage,
                now,
                memory,
                deployment=deployment,
                blind=_blind(exc),
            )
        health = health_settings(found.release)
        judged = self._judge(tasks, found, memory, now)
        return StageView(
            stack=self.key.stack,
            stage=self.key.stage,
            now=now,
            memory=memory,
            target=Target(
                release=release_facts(found.release),
                route=route,
                settings=settings,
                recipe=task_recipe(found.release, stage, found.deployment, health),
            ),
            deployment=deployment,
            last_completed=release_facts(found.last_completed) if found.last_completed else None,
            releases=tuple(release_facts(r) for r in found.labelled),
            tasks=tuple(self._task_facts(t, judged, memory, masker, where) for t in tasks),
            nodes=tuple(nodes) if nodes is not None else None,
            node_use=tuple(sorted(use.items())),
        )

    def _require_abilities(
        self, stage: StageConfig, settings: StageSettings, engine: Engine
    ) -> None:
        """UnsupportedError when the stage needs what its target's engine or the router
        cannot do (a usage error: the deployment fails at once, naming it)."""
        if stage.health.type == "docker":
            require(
                engine,
                "image_healthcheck",
                needed_for=f"judge stage {self.key} by its image's HEALTHCHECK",
                hint="set health.type: http (with a path) in stackyard.yml, or use an "
                "engine that reports the image's health",
            )
        if stage.placement.constraints:
            require(
                engine,
                "nodes",
                needed_for=f"place stage {self.key}'s tasks by constraint "
                f"({', '.join(stage.placement.constraints)})",
                hint="remove placement.constraints from the stage, or run the platform on a "
                "cluster engine (stackyard up --engine swarm)",
            )
        if settings.host is not None:
            require(
                self._router,
                "host_routes",
                needed_for=f"serve stage {self.key} on the host name {settings.host}",
                hint="serve the stage on a `port:` instead, or use a router with host routes",
            )
        if settings.tls != "off":
            require(
                self._router,
                "certificates",
                needed_for=f"serve stage {self.key} over HTTPS (tls: {settings.tls})",
                hint="set `tls: off` for the stage, or use a router that manages certificates",
            )

    # -- the store

    def _records(self, tasks: list[TaskInfo]) -> _Records | None:
        """The stage's records; None when it has nothing to run (no stack, no release)."""
        stage = self.key.stage
        with self._sessions() as session:
            stack = session.scalar(select(Stack).where(Stack.name == self.key.stack))
            if stack is None:
                return None
            deployment = records.active(session, stack.id, stage)
            last_completed = records.current_release(session, stack.id, stage)
            if deployment is not None:
                release = records.find_release(session, stack.id, stage, deployment.release_number)
            elif last_completed is not None:
                release = last_completed
            else:
                return None
            numbers = {_release_label(t) for t in tasks} - {NO_RELEASE, release.number}
            labelled = (
                session.scalars(
                    select(Release).where(
                        Release.stack_id == stack.id,
                        Release.stage == stage,
                        Release.number.in_(sorted(numbers)),
                    )
                ).all()
                if numbers
                else []
            )
            route = session.scalar(
                select(StageRoute).where(StageRoute.stack_id == stack.id, StageRoute.stage == stage)
            )
            ports = tuple(p for p in session.scalars(select(StageRoute.port)) if p is not None)
            session.expunge_all()
        return _Records(
            stack.id, release, deployment, last_completed, route, tuple(labelled), ports
        )

    # -- the router

    def _route(self, found: _Records, stage: StageConfig, settings: StageSettings) -> RouteFacts:
        """The stage's route as stored and as the router serves it; when the router has no
        route on that port, whether the port is free, and a spare one if the platform may
        move it (or must pick one)."""
        row = found.route
        stored_port, stored_host = (row.port, row.host) if row else (None, None)
        host = settings.host
        port = None if host else (stage.port or stored_port)
        spare = None
        if host is None and port is None:
            spare = port = route_port(self._route_ports, found.route_ports)
        name = stage_route(self.key, port, host).name
        upstreams = self._router.upstreams(stage_route(self.key, port, host))
        free = True
        listen = self._router.listen_host
        if upstreams is None and port is not None and spare is None:
            free = port_free(port, listen)
            if not free and stage.port is None:
                spare = route_port(self._route_ports, set(found.route_ports) | {port})
        return RouteFacts(
            name=name,
            stored_port=stored_port,
            stored_host=stored_host,
            has_row=row is not None,
            upstreams=tuple(upstreams) if upstreams is not None else None,
            listen_host=listen,
            port_free=free,
            spare_port=spare,
            stored_aliases=tuple(row.aliases or ()) if row else (),
            stored_tls=row.tls if row else "off",
        )

    # -- the tasks and their health

    def _judge(
        self, tasks: list[TaskInfo], found: _Records, memory: StageMemory, now: float
    ) -> dict[str, Judgement]:
        """Each task's health as last judged, by its own release's check (a deployment may
        bring another one: the old tasks are still judged by theirs). Then tell the
        scheduler which tasks to probe (running ones not being stopped): read first, as it
        forgets the tasks that exited."""
        checks = {str(r.number): health_settings(r) for r in (found.release, *found.labelled)}
        target = checks[str(found.release.number)]
        # Judged at the address each task has now: one that moved is probed anew there.
        probed = self._health.judgements(
            self.key, {t.id: t.address for t in tasks if t.address is not None}
        )
        judged, watched = {}, {}
        for task in tasks:
            check = checks.get(task.labels.get(LABEL_RELEASE, ""), target)
            if not check.probed:
                judged[task.id] = Judgement(from_engine(task.health), task.health_output)
            elif task.id in probed:
                judged[task.id] = probed[task.id]
            if task.running and task.address is not None and task.id not in memory.stopping:
                watched[task.id] = (task.address, check)
        self._health.track(self.key, watched, now)
        return judged

    def _task_facts(
        self,
        task: TaskInfo,
        judged: Mapping[str, Judgement],
        memory: StageMemory,
        masker: Callable[[], SecretMasker],
        where: Mapping[str, str],
        *,
        read_logs: bool = True,
    ) -> TaskFacts:
        """The task as decide() sees it; the output of a bad one (its last health check,
        and its last log lines if it is not accounted for yet), masked."""
        judgement = judged.get(task.id, Judgement(TaskHealth.STARTING))
        # A task the engine moves to another node is on its way, not gone: it serves again
        # once its health check passes at its new address.
        moving = task.state is TaskState.MOVING
        state = (
            judgement.health
            if task.running
            else TaskHealth.STARTING
            if moving
            else TaskHealth.EXITED
        )
        bad = state in (TaskHealth.UNHEALTHY, TaskHealth.EXITED)
        accounted = task.id in memory.stopping or task.id in memory.counted
        read_logs = read_logs and bad and not accounted
        return TaskFacts(
            id=task.id,
            name=task.name,
            release=_release_label(task),
            digest=task.digest,
            address=str(task.address) if task.address else "",
            running=task.running,
            exit_code=task.exit_code,
            health=state,
            # The app's own output may print a secret: masked before it reaches any record.
            health_output=masker().mask(judgement.output) if bad and judgement.output else "",
            last_lines=self._last_lines(task, masker()) if read_logs else (),
            node=task.node,
            where=where.get(task.node, f"node {task.node}" if task.node else ""),
            error=task.error,
        )

    def _last_lines(self, task: TaskInfo, masker: SecretMasker) -> tuple[str, ...]:
        try:
            logs = self._engines.engine_of(task.id).logs(task.id, tail=LAST_LINES)
            lines = [line for line in logs if line.strip()]
        except StackyardError as exc:
            log.warning("stage %s: cannot read the log of task %s: %s", self.key, task.name, exc)
            return (f"(its log could not be read: {exc.message})",)
        return tuple(masker.mask(line) for line in lines[-LAST_LINES:])


# -- store rows as plain facts


def release_facts(release: Release) -> ReleaseFacts:
    return ReleaseFacts(release.number, release.digest, canonical(release.config))


def canonical(config: Mapping[str, Any]) -> str:
    """A config snapshot as one string: equal configs, equal strings."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def health_settings(release: Release) -> HealthSettings:
    """The health check a release's tasks are judged by (its stage config snapshot)."""
    return HealthSettings(**records.stage_config(release).health.model_dump())


def deployment_facts(row: Deployment) -> DeploymentFacts:
    return DeploymentFacts(
        id=row.id,
        number=row.number,
        release=row.release_number,
        digest=row.digest,
        status=DeploymentStatus(row.status),
        desired=row.desired,
        trigger=row.trigger,
        failures=row.failures,
        reason=row.reason,
        log_path=row.log_path,
    )


def stage_names(
    stage: StageConfig, key: StageKey, domains: Domains, row: StageRoute | None = None
) -> tuple[str, ...]:
    """The stage's host names: its ``host``, its name under the base domain (unless it
    chose a port), its ``domains``, then those `stackyard domains add` gave it."""
    default = domains.default_name(key) if stage.port is None else None
    added = list(row.added_domains or ()) if row is not None else []
    names = [*([stage.host] if stage.host else []), *([default] if default else [])]
    return tuple(dict.fromkeys([*names, *stage.domains, *added]))


def stage_settings(
    stage: StageConfig,
    key: StageKey | None = None,
    domains: Domains | None = None,
    row: StageRoute | None = None,
) -> StageSettings:
    names = stage_names(stage, key, domains, row) if key and domains else (stage.host,)
    named = tuple(n for n in names if n)
    tls: TlsMode = (stage.tls or (domains.tls if domains else "off")) if named else "off"
    return StageSettings(
        replicas=stage.replicas,
        minimum_healthy_percent=stage.deploy.minimum_healthy_percent,
        maximum_percent=stage.deploy.maximum_percent,
        drain_seconds=stage.deploy.drain_seconds,
        stop_timeout=stage.deploy.stop_timeout,
        port=stage.port,
        host=named[0] if named else None,
        aliases=named[1:],
        tls=tls,
        constraints=tuple(stage.placement.constraints),
        spread=stage.placement.spread,
    )


def task_recipe(
    release: Release, stage: StageConfig, deployment: Deployment | None, health: HealthSettings
) -> TaskRecipe:
    config = release.config
    env_file = config.get("env_file")
    return TaskRecipe(
        release=release.number,
        digest=release.digest,
        deployment=deployment.number if deployment else 0,
        # The allowed host names common starters read; the release's own variables win.
        variables=tuple(
            sorted({**platform_hosts(stage.host), **(config.get("variables") or {})}.items())
        ),
        secrets=tuple(sorted((config.get("secrets") or {}).items())),
        env_file=(
            EnvFile(env_file["path"], env_file["template_path"], env_file["template"])
            if env_file
            else None
        ),
        container_port=stage.container_port,
        cpu=stage.cpu,
        memory=stage.memory_bytes,
        pids_limit=stage.pids_limit,
        read_only=stage.read_only,
        stop_timeout=stage.deploy.stop_timeout,
        health=health,
        target=stage.target,
    )


def _places(nodes: list[NodeInfo] | None) -> dict[str, str]:
    """node id -> "node NAME (ADDRESS)", as the lines that explain a failure name it."""
    return {n.id: f"node {n.name or n.id} ({n.address or n.id})" for n in nodes or ()}


def _blind(exc: StackyardError) -> Blocked:
    return Blocked(exc.message, exc.hint or "", permanent=not exc.retryable)


def _release_label(task: TaskInfo) -> int:
    label = task.labels.get(LABEL_RELEASE, "")
    return int(label) if label.isdigit() else NO_RELEASE
