"""The deployment controller: one loop per stage drives its tasks toward the right release.

Each tick observes (engine tasks, health checks, router upstreams), asks the pure planner
(deploy/plan.py) for the next step, and applies it through the Engine and Router seams.
With a deployment active the target is its release, with the circuit breaker on; without
one the target is the stage's current release and the loop heals (replaces dead tasks).
All state a restarted control plane needs lives in the store and in task labels.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.config.models import StageConfig
from stackyard.deploy import records
from stackyard.deploy.health import HealthSettings, HealthTracker
from stackyard.deploy.plan import (
    Desired,
    ObservedTask,
    Outcome,
    Plan,
    TaskHealth,
    failure_threshold,
    plan_rollout,
)
from stackyard.engines.base import (
    LABEL_DEPLOYMENT,
    LABEL_PLATFORM,
    LABEL_PORT,
    LABEL_RELEASE,
    LABEL_STACK,
    LABEL_STAGE,
    Engine,
    NetworkMode,
    TaskInfo,
    TaskSpec,
)
from stackyard.errors import PermanentError, StackyardError
from stackyard.images.imagestore import ImageStore
from stackyard.registry_login import RegistryLogin
from stackyard.router.base import Route, Router
from stackyard.secrets.envfile import render_env_file
from stackyard.secrets.masking import SecretMasker
from stackyard.store.models import Deployment, Event, Release, Stack, StageRoute

log = logging.getLogger(__name__)

# A deployment whose every tick fails (engine or router unreachable) fails after this long.
ERROR_BUDGET = 30.0


@dataclass(frozen=True)
class StageKey:
    stack: str
    stage: str

    def __str__(self) -> str:
        return f"{self.stack}/{self.stage}"


@dataclass(frozen=True)
class ControllerSettings:
    platform_id: str
    logs_dir: Path
    network_mode: NetworkMode = "host"
    task_ports: tuple[int, int] = (20000, 29999)
    route_ports: tuple[int, int] = (8000, 8999)
    tick: float = 0.1
    idle_tick: float = 1.0


@dataclass
class _Target:
    stack_id: int
    release: Release
    stage: StageConfig
    deployment: Deployment | None
    route: Route


@dataclass
class _Memory:
    """What a loop remembers between ticks; lost on restart, and rebuilt safely from state."""

    unrouted_at: dict[str, float] = field(default_factory=dict)
    stopping: set[str] = field(default_factory=set)
    counted: set[str] = field(default_factory=set)
    tracker: HealthTracker | None = None
    health_key: HealthSettings | None = None
    deployment: int | None = None
    health: dict[str, TaskHealth] = field(default_factory=dict)  # as last assessed


class Controller:
    """Owns the stage loops. The API asks it to ``wake`` a stage after recording a change."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        engine: Engine,
        router: Router,
        images: ImageStore,
        settings: ControllerSettings,
        *,
        rollback: Callable[[str, str, int, str], Release],
        secret_values: Callable[[str], list[str]] = lambda _stack: [],
        resolve_secrets: Callable[[str, Mapping[str, int]], dict[str, str]] = (
            lambda _stack, _versions: {}
        ),
    ) -> None:
        self.sessions = sessions
        self.engine = engine
        self.router = router
        self.images = images
        self.settings = settings
        self.rollback = rollback
        # Every secret value of a stack (masked in deployment logs), and a release
        # snapshot's secret versions -> decrypted values (given to its tasks).
        self.secret_values = secret_values
        self.resolve_secrets = resolve_secrets
        self._loops: dict[StageKey, _StageLoop] = {}
        self._lock = threading.Lock()
        self._ports_lock = threading.Lock()
        self._reserved: set[int] = set()
        self._stoppers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="task-stop")
        self.starters = ThreadPoolExecutor(max_workers=4, thread_name_prefix="task-start")
        self._stopped = threading.Event()

    # -- lifecycle

    def start(self) -> None:
        """Adopt every stage that has a release, and clean up tasks of deleted stacks."""
        with self.sessions() as session:
            pairs = session.execute(
                select(Stack.name, Release.stage)
                .join(Release, Release.stack_id == Stack.id)
                .distinct()
            ).all()
            stacks = set(session.scalars(select(Stack.name)))
        for stack, stage in pairs:
            self.wake(StageKey(stack, stage))
        try:
            self._remove_orphans(stacks)
        except StackyardError as exc:  # the engine may be down; the stage loops retry
            log.warning("could not look for orphan tasks: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            loops = list(self._loops.values())
        for loop in loops:
            loop.stop()
        self._stoppers.shutdown(wait=True)
        self.starters.shutdown(wait=True)

    def wake(self, key: StageKey) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            loop = self._loops.get(key)
            if loop is None:
                loop = _StageLoop(self, key)
                self._loops[key] = loop
                loop.start()
        loop.nudge()

    def loop_for(self, key: StageKey) -> _StageLoop:
        """The stage's loop, created without its thread if missing: a caller drives ``tick``.

        Unit tests use it to run one tick at a time; ``wake`` is what starts a loop's thread.
        """
        with self._lock:
            loop = self._loops.get(key)
            if loop is None:
                loop = _StageLoop(self, key)
                self._loops[key] = loop
            return loop

    def task_health(self, key: StageKey) -> dict[str, TaskHealth]:
        """The stage's task health as its loop last judged it (HTTP checks included)."""
        with self._lock:
            loop = self._loops.get(key)
        return dict(loop.memory.health) if loop is not None else {}

    def wake_all(self) -> None:
        """Nudge every stage loop (e.g. the router restarted and needs its routes back)."""
        with self._lock:
            loops = list(self._loops.values())
        for loop in loops:
            loop.nudge()

    def routes_of(self, stack: str) -> list[Route]:
        """The routes of the stack's stages (read them before the stack is deleted)."""
        with self.sessions() as session:
            rows = session.execute(
                select(StageRoute.stage, StageRoute.port, StageRoute.host)
                .join(Stack, Stack.id == StageRoute.stack_id)
                .where(Stack.name == stack)
            ).all()
        return [stage_route(StageKey(stack, stage), port, host) for stage, port, host in rows]

    def forget(self, stack: str, routes: Sequence[Route] = ()) -> None:
        """A stack was deleted: stop its loops, remove its tasks, then its routes."""
        with self._lock:
            keys = [k for k in self._loops if k.stack == stack]
            loops = [self._loops.pop(k) for k in keys]
        for loop in loops:
            loop.stop()
        for task in self.engine.list(
            {LABEL_PLATFORM: self.settings.platform_id, LABEL_STACK: stack}
        ):
            self._stop_and_remove(task)
        for route in routes:
            try:
                self.router.remove_route(route)
            except StackyardError as exc:
                log.warning("could not remove route %s: %s", route.name, exc)

    def _remove_orphans(self, stacks: set[str]) -> None:
        for task in self.engine.list({LABEL_PLATFORM: self.settings.platform_id}):
            if task.labels.get(LABEL_STACK) not in stacks:
                log.info("removing orphan task %s", task.name)
                self._stop_and_remove(task)

    def _stop_and_remove(self, task: TaskInfo) -> None:
        with contextlib.suppress(StackyardError):
            self.engine.stop(task.id, 5)
            self.engine.remove(task.id)

    # -- ports

    def allocate_task_port(self) -> int:
        low, high = self.settings.task_ports
        with self._ports_lock:
            used = {
                int(t.labels[LABEL_PORT])
                for t in self.engine.list({LABEL_PLATFORM: self.settings.platform_id})
                if t.labels.get(LABEL_PORT, "").isdigit()
            } | self._reserved
            for port in _candidates(low, high):
                if port not in used and port_free(port):
                    self._reserved.add(port)
                    return port
        raise StackyardError(f"no free task port between {low} and {high}")

    def release_port(self, port: int) -> None:
        with self._ports_lock:
            self._reserved.discard(port)

    def stop_task(self, task_id: str, timeout: float) -> None:
        self._stoppers.submit(self._stop_quietly, task_id, timeout)

    def _stop_quietly(self, task_id: str, timeout: float) -> None:
        try:
            self.engine.stop(task_id, timeout)
        except StackyardError as exc:
            log.warning("stopping task %s failed: %s", task_id, exc)


def stage_route(key: StageKey, port: int | None, host: str | None) -> Route:
    """The router's route of a stage: named ``<stack>-<stage>``, on its port or host."""
    return Route(name=f"{key.stack}-{key.stage}", port=port, host=host)


def _candidates(low: int, high: int) -> list[int]:
    start = low + secrets.randbelow(high - low + 1)
    return list(range(start, high + 1)) + list(range(low, start))


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _StageLoop:
    """One stage's control loop, on its own thread."""

    def __init__(self, controller: Controller, key: StageKey) -> None:
        self.c = controller
        self.key = key
        self.memory = _Memory()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failures = 0  # ticks failed in a row, to back off
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"stage-{key}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.memory.tracker is not None:
            self.memory.tracker.close()

    def nudge(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = self.run_once()
            pause = self.c.settings.tick if busy else self.c.settings.idle_tick
            pause = min(pause * (1 + self._failures), 5.0)
            tracker = self.memory.tracker
            probe_in = tracker.next_probe_in(time.monotonic()) if tracker else None
            if probe_in is not None and not self._failures:
                pause = min(pause, probe_in)  # a starting task's probe is due: route it sooner
            self._wake.wait(pause)
            self._wake.clear()

    def run_once(self) -> bool:
        """One tick as the thread runs it: an error is recorded, and fails the deployment
        when retrying cannot help (PermanentError, or failing for ERROR_BUDGET seconds)."""
        try:
            busy = self.tick()
        except Exception as exc:  # keep the loop alive; the error is logged and retried
            self._failures += 1
            self._failing_since = self._failing_since or time.monotonic()
            log.warning("stage %s: tick failed (%s): %s", self.key, type(exc).__name__, exc)
            give_up = not getattr(exc, "retryable", True) or (
                time.monotonic() - self._failing_since > ERROR_BUDGET
            )
            self._note_error(exc, give_up=give_up)
            return False
        self._failures, self._failing_since = 0, None
        return busy

    # -- one tick

    def tick(self) -> bool:
        """Observe, plan, apply once; True while a deployment is active (tick fast)."""
        target = self._target()
        if target is None:
            self._clear_out()
            return False
        deployment = target.deployment
        adopting = False
        if deployment is not None and self.memory.deployment != deployment.id:
            self._begin(deployment)
            adopting = deployment.failures > 0  # begun by an earlier control plane
        tasks = self.c.engine.list(self._labels())
        health = self._tracker(target.stage).assess(tasks, time.monotonic())
        self.memory.health = dict(health)
        upstreams = self.c.router.upstreams(target.route)
        observed = [self._observe(t, health[t.id], upstreams, target) for t in tasks]
        if adopting:
            # Its failed new tasks were counted before the restart (it also stopped them,
            # which the memory lost): count each failed task once.
            self.memory.counted.update(
                t.id
                for t in observed
                if t.release == target.release.number
                and t.health in (TaskHealth.UNHEALTHY, TaskHealth.EXITED)
            )
        desired = Desired(
            release=target.release.number,
            replicas=target.stage.replicas,
            minimum_healthy_percent=target.stage.deploy.minimum_healthy_percent,
            maximum_percent=target.stage.deploy.maximum_percent,
            drain_seconds=target.stage.deploy.drain_seconds,
            failure_threshold=failure_threshold(target.stage.replicas) if deployment else None,
        )
        plan = plan_rollout(
            desired,
            observed,
            failures=deployment.failures if deployment else 0,
            now=time.monotonic(),
            counted=frozenset(self.memory.counted),
        )
        self._apply(plan, target, {t.id: t for t in tasks}, observed, upstreams)
        return deployment is not None

    def _labels(self) -> dict[str, str]:
        return {
            LABEL_PLATFORM: self.c.settings.platform_id,
            LABEL_STACK: self.key.stack,
            LABEL_STAGE: self.key.stage,
        }

    def _target(self) -> _Target | None:
        with self.c.sessions.begin() as session:
            stack = session.scalar(select(Stack).where(Stack.name == self.key.stack))
            if stack is None:
                return None
            deployment = records.active(session, stack.id, self.key.stage)
            if deployment is not None:
                release = records.find_release(
                    session, stack.id, self.key.stage, deployment.release_number
                )
                if deployment.status == "QUEUED":
                    deployment.status = "IN_PROGRESS"
                    deployment.started_at = datetime.now(UTC)
            else:
                current = records.current_release(session, stack.id, self.key.stage)
                if current is None:
                    return None
                release = current
            stage = records.stage_config(release)
            route = self._route(session, stack.id, stage)
            session.flush()
            session.expunge_all()
            return _Target(stack.id, release, stage, deployment, route)

    def _route(self, session: Session, stack_id: int, stage: StageConfig) -> Route:
        row = session.scalar(
            select(StageRoute).where(
                StageRoute.stack_id == stack_id, StageRoute.stage == stage.name
            )
        )
        if row is None:
            row = StageRoute(stack_id=stack_id, stage=stage.name)
            session.add(row)
        if stage.host is not None:
            row.host, row.port = stage.host, None
        elif stage.port is not None:
            row.host, row.port = None, stage.port
        elif row.port is None:
            row.host, row.port = None, self._free_route_port(session)
        return stage_route(self.key, row.port, row.host)

    def _free_route_port(self, session: Session) -> int:
        taken = {p for p in session.scalars(select(StageRoute.port)) if p is not None}
        low, high = self.c.settings.route_ports
        for port in range(low, high + 1):
            if port not in taken and port_free(port):
                return port
        raise StackyardError(f"no free stage port between {low} and {high}")

    def _tracker(self, stage: StageConfig) -> HealthTracker:
        key = HealthSettings(**stage.health.model_dump())
        if self.memory.tracker is None or self.memory.health_key != key:
            if self.memory.tracker is not None:
                self.memory.tracker.close()
            self.memory.tracker = HealthTracker(key)
            self.memory.health_key = key
        return self.memory.tracker

    def _observe(
        self, task: TaskInfo, health: TaskHealth, upstreams: list[str] | None, target: _Target
    ) -> ObservedTask:
        stopping = task.id in self.memory.stopping
        if stopping and health is not TaskHealth.EXITED:
            health = TaskHealth.STOPPING
        return ObservedTask(
            id=task.id,
            release=self._equivalent_release(task, target),
            health=health,
            routed=upstreams is not None and address(task) in upstreams,
            unrouted_at=self.memory.unrouted_at.get(task.id),
            stopped_by_us=stopping,
        )

    def _equivalent_release(self, task: TaskInfo, target: _Target) -> int:
        """A task of another release with the same digest and config counts as the target's."""
        label = task.labels.get(LABEL_RELEASE, "")
        number = int(label) if label.isdigit() else -1
        if number == target.release.number:
            return number
        with self.c.sessions() as session:
            other = session.scalar(
                select(Release).where(
                    Release.stack_id == target.stack_id,
                    Release.stage == self.key.stage,
                    Release.number == number,
                )
            )
        if (
            other is not None
            and other.digest == target.release.digest
            and other.config == target.release.config
            and task.digest == target.release.digest
        ):
            return target.release.number
        return number

    # -- applying a plan

    def _apply(
        self,
        plan: Plan,
        target: _Target,
        tasks: dict[str, TaskInfo],
        observed: list[ObservedTask],
        upstreams: list[str] | None,
    ) -> None:
        now = time.monotonic()
        for task_id in plan.failed:
            self._failed(task_id, tasks[task_id], target)
        if plan.route is not None or upstreams is None:
            self._route_to(target, plan, tasks, observed, upstreams, now)
        for task_id in plan.stop:
            self.memory.stopping.add(task_id)
            self.c.stop_task(task_id, target.stage.deploy.stop_timeout)
            self._say(target, f"stopping task {tasks[task_id].name}")
            self._count(target, "tasks_stopped")
        for task_id in plan.remove:
            with contextlib.suppress(StackyardError):
                self.c.engine.remove(task_id)
            self._forget(task_id)
        if plan.outcome is not Outcome.FAILED and plan.start:
            self._start_tasks(target, plan.start)
        self._progress(target, observed)
        if plan.outcome is Outcome.COMPLETED and target.deployment is not None:
            self._finish(target, "COMPLETED", "")
        elif plan.outcome is Outcome.FAILED and target.deployment is not None:
            self._fail(target)

    def _route_to(
        self,
        target: _Target,
        plan: Plan,
        tasks: dict[str, TaskInfo],
        observed: list[ObservedTask],
        upstreams: list[str] | None,
        now: float,
    ) -> None:
        ids = plan.route if plan.route is not None else tuple(t.id for t in observed if t.routed)
        addresses = [address(tasks[i]) for i in ids]
        if upstreams is None:
            self._check_route_port(target)
            self.c.router.ensure_route(target.route, addresses)
            self._say(target, f"route {target.route.url} -> {', '.join(addresses) or 'nothing'}")
        else:
            self.c.router.set_upstreams(target.route, addresses)
            self._say(target, f"routing {target.route.url} -> {', '.join(addresses) or 'nothing'}")
        for task in observed:
            if task.routed and task.id not in ids:
                self.memory.unrouted_at[task.id] = now

    def _check_route_port(self, target: _Target) -> None:
        """Before the route is (re)created: its port must be free.

        A port the stage chose in stackyard.yml fails the deployment; a port the platform
        picked is replaced by another free one (another process took it meanwhile).
        """
        route = target.route
        if route.port is None or port_free(route.port):
            return
        if target.stage.port is not None:
            raise PermanentError(
                f"stage {self.key}: port 127.0.0.1:{route.port} is in use by another process",
                hint="stop that process, or set another `port:` for the stage in stackyard.yml",
            )
        with self.c.sessions.begin() as session:
            row = session.scalar(
                select(StageRoute).where(
                    StageRoute.stack_id == target.stack_id, StageRoute.stage == self.key.stage
                )
            )
            if row is None:
                return
            row.port = self._free_route_port(session)
            target.route = Route(name=route.name, port=row.port, host=None)
        self._say(target, f"port {route.port} was taken by another process; serving on {row.port}")

    def _start_tasks(self, target: _Target, count: int) -> None:
        """Start ``count`` tasks of the target release, the engine's part concurrently: a
        20-replica rollout should not take 20 container starts one after another."""
        specs = [spec for spec in (self._task_spec(target) for _ in range(count)) if spec]
        if len(specs) > 1:
            outcomes = list(self.c.starters.map(self._engine_start, specs))
        else:
            outcomes = [self._engine_start(spec) for spec in specs]
        for spec, outcome in zip(specs, outcomes, strict=True):
            if isinstance(outcome, StackyardError):
                reason = f"task {spec.name} failed to start: {outcome.message}"
                self._say(target, reason)
                if target.deployment is not None:
                    self._bump_failures(target, reason)
                continue
            self._tracker(target.stage).watch(outcome.id, time.monotonic())
            self._say(target, f"started task {outcome.name} on port {spec.port} ({spec.image})")
            self._count(target, "tasks_started")

    def _engine_start(self, spec: TaskSpec) -> TaskInfo | StackyardError:
        try:
            return self.c.engine.start(spec)
        except StackyardError as exc:
            return exc
        finally:
            self.c.release_port(spec.port)  # the task's label holds it from now on

    def _task_spec(self, target: _Target) -> TaskSpec | None:
        """What to start for one task of the target release, its port reserved; None (and
        the failure counted) when its config cannot be made."""
        release = target.release
        try:
            env, files = self._task_config(release)
        except StackyardError as exc:
            reason = f"cannot start a task of release {release.number}: {exc.message}"
            self._say(target, reason)
            if target.deployment is not None:
                self._bump_failures(target, reason)
            return None
        port = self.c.allocate_task_port()
        name = f"sy-{self.key.stack}-{self.key.stage}-r{release.number}-{secrets.token_hex(3)}"
        credentials = self.c.images.credentials
        labels = {
            **self._labels(),
            LABEL_RELEASE: str(release.number),
            LABEL_DEPLOYMENT: str(target.deployment.number if target.deployment else 0),
            LABEL_PORT: str(port),
        }
        return TaskSpec(
            name=name,
            image=f"{self.c.images.image_url(self.key.stack)}@{release.digest}",
            port=port,
            labels=labels,
            env=env,
            files=files,
            network_mode=self.c.settings.network_mode,
            container_port=target.stage.container_port,
            cpu=target.stage.cpu,
            memory=target.stage.memory_bytes,
            stop_timeout=target.stage.deploy.stop_timeout,
            login=RegistryLogin(self.c.images.endpoint, credentials.username, credentials.password),
        )

    def _task_config(self, release: Release) -> tuple[dict[str, str], dict[str, str]]:
        """A task's environment (the snapshot's variables, then its secrets, decrypted now)
        and files (the env file, rendered now; it exists only inside the container)."""
        secrets = self.c.resolve_secrets(self.key.stack, release.config.get("secrets", {}))
        env = {**release.config.get("variables", {}), **secrets}
        env_file = release.config.get("env_file")
        if not env_file:
            return env, {}
        text = render_env_file(env_file["template_path"], env_file["template"], env)
        return env, {env_file["path"]: text}

    def _failed(self, task_id: str, task: TaskInfo, target: _Target) -> None:
        self.memory.counted.add(task_id)
        health = self.memory.tracker.output(task_id) if self.memory.tracker else ""
        # The app's own output may print a secret: mask it before it reaches any record.
        masker = self._masker()
        lines = [masker.mask(line) for line in self._last_lines(task_id)]
        health = masker.mask(health)
        state = f"exited with status {task.exit_code}" if not task.running else "is unhealthy"
        reason = f"task {task.name} {state}"
        if health:
            reason += f"; last health check: {health}"
        if lines:
            reason += "; last log lines: " + " | ".join(lines)
        self._say(target, reason)
        if target.deployment is not None:
            self._bump_failures(target, reason)
        else:
            self._event("heal", f"{reason}; replacing it")

    def _last_lines(self, task_id: str) -> list[str]:
        try:
            return [line for line in self.c.engine.logs(task_id, tail=5) if line.strip()][-5:]
        except StackyardError:
            return []

    def _bump_failures(self, target: _Target, reason: str) -> None:
        if target.deployment is None:
            return
        with self.c.sessions.begin() as session:
            row = session.get(Deployment, target.deployment.id)
            if row is not None:
                row.failures += 1
                row.reason = reason
                target.deployment.failures = row.failures

    def _count(self, target: _Target, column: str) -> None:
        if target.deployment is None:
            return
        with self.c.sessions.begin() as session:
            row = session.get(Deployment, target.deployment.id)
            if row is not None:
                setattr(row, column, getattr(row, column) + 1)

    def _progress(self, target: _Target, observed: list[ObservedTask]) -> None:
        if target.deployment is None:
            return
        new = [t for t in observed if t.release == target.release.number]
        with self.c.sessions.begin() as session:
            row = session.get(Deployment, target.deployment.id)
            if row is not None:
                row.tasks_healthy = sum(1 for t in new if t.health is TaskHealth.HEALTHY)
                row.tasks_routed = sum(1 for t in new if t.routed)

    def _begin(self, deployment: Deployment) -> None:
        self.memory.deployment = deployment.id
        self.memory.counted.clear()
        target_log = Path(deployment.log_path)
        target_log.parent.mkdir(parents=True, exist_ok=True)
        self._write(
            deployment.log_path,
            f"deployment {deployment.number}: release {deployment.release_number} "
            f"({deployment.digest}), {deployment.desired} task(s), trigger {deployment.trigger}",
        )

    def _finish(self, target: _Target, status: str, reason: str) -> None:
        if target.deployment is None:
            return
        with self.c.sessions.begin() as session:
            row = session.get(Deployment, target.deployment.id)
            if row is not None:
                row.status = status
                row.reason = reason or row.reason
                row.finished_at = datetime.now(UTC)
        self._say(target, f"deployment {status}" + (f": {reason}" if reason else ""))
        changes.end(target.deployment.log_path)  # a waiting run, a log follower
        self.memory.deployment = None

    def _fail(self, target: _Target) -> None:
        if target.deployment is None:
            return
        threshold = failure_threshold(target.stage.replicas)
        with self.c.sessions() as session:
            row = session.get(Deployment, target.deployment.id)
            last = row.reason if row else ""
            failed = row.failures if row else threshold
            previous = records.current_release(session, target.stack_id, self.key.stage)
        reason = f"{failed} new task(s) failed (circuit breaker at {threshold}); {last}"
        self._finish(target, "FAILED", reason)
        if previous is None:
            self._say(target, "no earlier COMPLETED release to go back to")
            return
        if previous.digest == target.release.digest and previous.config == target.release.config:
            # The failed release is a copy of the last COMPLETED one (a failed rollback):
            # rolling back to it again would repeat the failure, forever.
            self._say(
                target,
                f"not rolling back: release {previous.number}, the last COMPLETED one, has the "
                "image and config that just failed",
            )
            return
        try:
            restored = self.c.rollback(
                self.key.stack,
                self.key.stage,
                previous.number,
                f"rollback: deployment {target.deployment.number} failed",
            )
        except StackyardError as exc:
            self._say(target, f"rollback to release {previous.number} failed: {exc.message}")
            return
        self._say(
            target,
            f"rolled back: release {restored.number} copies release {previous.number} "
            f"({previous.digest}) and its config",
        )

    def _clear_out(self) -> None:
        """No release to serve (first deployment failed, or stack gone): stop leftovers."""
        for task in self.c.engine.list(self._labels()):
            if task.running and task.id not in self.memory.stopping:
                self.memory.stopping.add(task.id)
                self.c.stop_task(task.id, 10)
            elif not task.running:
                with contextlib.suppress(StackyardError):
                    self.c.engine.remove(task.id)
                self._forget(task.id)

    def _forget(self, task_id: str) -> None:
        self.memory.stopping.discard(task_id)
        self.memory.unrouted_at.pop(task_id, None)

    # -- logging

    def _say(self, target: _Target, text: str) -> None:
        log.info("stage %s: %s", self.key, text)
        if target.deployment is not None:
            self._write(target.deployment.log_path, text)

    def _write(self, path: str, text: str) -> None:
        masker = self._masker()
        with BuildLog(Path(path), masker, None) as deployment_log:
            deployment_log.line("deploy", LineKind.MESSAGE, text)

    def _masker(self) -> SecretMasker:
        password = self.c.images.credentials.password
        return SecretMasker([password, *self.c.secret_values(self.key.stack)])

    def _event(self, kind: str, message: str) -> None:
        log.info("stage %s: %s", self.key, message)
        with self.c.sessions.begin() as session:
            session.add(Event(kind=kind, subject=str(self.key), message=message))

    def _note_error(self, exc: Exception, *, give_up: bool) -> None:
        """Record the error on the active deployment; fail it if retrying cannot help."""
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        hint = getattr(exc, "hint", None)
        if hint:
            message += f" ({hint})"
        with contextlib.suppress(Exception), self.c.sessions.begin() as session:
            stack = session.scalar(select(Stack).where(Stack.name == self.key.stack))
            if stack is None:
                return
            row = records.active(session, stack.id, self.key.stage)
            if row is None or row.status != "IN_PROGRESS":
                return
            if not give_up:
                row.reason = f"retrying: {message}"
                return
            row.status, row.reason = "FAILED", message
            row.finished_at = datetime.now(UTC)
            log_path = row.log_path
        if give_up:
            with contextlib.suppress(Exception):
                self._write(log_path, f"deployment FAILED: {message}")
            self.memory.deployment = None


def address(task: TaskInfo) -> str:
    return f"127.0.0.1:{task.port}"
