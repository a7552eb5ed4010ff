"""The deployment controller: one loop per stage drives its tasks toward the right release.

Each step observes the stage (deploy/observe.py), decides the whole plan as plain data
(deploy/decide.py) and carries it out through the Engine and Router seams
(deploy/execute.py); the loops themselves are in deploy/loops.py. With a deployment active
the target is its release, with the circuit breaker on; without one the target is the
stage's current release and the loop heals (replaces dead tasks). A stage runs on its
release's target's engine: the platform's own for ``local``, another made for a target
when a stage on it is first observed (deploy/targetengines.py). One task watch
(deploy/taskwatch.py) follows each engine in use for every stage on it, and one health
scheduler (deploy/health.py) probes every task, so a stage with nothing to do costs
nothing. All state a restarted control plane needs lives in the store and in task labels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy.deploylog import StageLog
from stackyard.deploy.execute import Executor, Seams
from stackyard.deploy.health import ProbeScheduler
from stackyard.deploy.imagecheck import ImageCheck
from stackyard.deploy.keys import (
    Domains,
    StageKey,
    may_be_stage_route,
    stage_route,
    stage_route_name,
)
from stackyard.deploy.loops import Pace, StageLoop
from stackyard.deploy.observe import StageObserver
from stackyard.deploy.plan import TaskHealth
from stackyard.deploy.portpool import TaskPorts
from stackyard.deploy.targetengines import (
    LOCAL,
    EngineFactory,
    TargetEngines,
    only_local_engine,
)
from stackyard.deploy.taskwatch import TaskWatch
from stackyard.deploy.ticker import Ticker
from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_PORT,
    LABEL_STACK,
    LABEL_STAGE,
    NODE_LABEL_DRAINING,
    Availability,
    Engine,
    NetworkMode,
    NodeInfo,
    TaskInfo,
    TaskState,
)
from stackyard.errors import StackyardError
from stackyard.images.imagestore import ImageStore, TargetPlace, only_local
from stackyard.notify.outbox import Outbox
from stackyard.registry_login import RegistryLogin
from stackyard.router.base import Route, Router
from stackyard.store.models import Release, RetiredStage, Stack, StageRoute

__all__ = ["Controller", "ControllerSettings", "StageKey", "stage_route"]

log = logging.getLogger(__name__)

TARGET_RETRY_LIMIT = 60.0  # the longest pause of a target's task watch between two tries


@dataclass(frozen=True)
class ControllerSettings:
    platform_id: str
    logs_dir: Path
    network_mode: NetworkMode = "host"
    task_ports: tuple[int, int] = (20000, 29999)
    route_ports: tuple[int, int] = (8000, 8999)
    domains: Domains = field(default_factory=Domains)  # a base domain; stages' default TLS
    tick: float = 0.1  # a stage with a deployment active looks again this often
    retry: float = 1.0  # first pause after a failed step (it grows, to 5 s)
    safety_tick: float = 300.0  # a settled stage looks once in a while, in case
    resync: float = 30.0  # the task watch lists every task again this often
    poll: float = 1.0  # ... or this often, for an engine without events
    task_registry: str | None = None  # the registry address tasks pull from (None: images')
    keep_releases: int = 10  # retention's count, named when a release's image is gone
    orphan_sweep: float = 30.0  # tasks of deleted stacks are looked for this often


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
        outbox: Outbox | None = None,
        targets: Callable[[str], TargetPlace] = only_local,
        engines: EngineFactory = only_local_engine,
        target_names: Callable[[], Iterable[str]] = lambda: (LOCAL,),
    ) -> None:
        self.sessions = sessions
        self.targets = targets  # a target's name -> the registry its engine pulls from
        self.engine = engine
        self.router = router
        self.images = images
        self.settings = settings
        self.rollback = rollback
        # Every secret value of a stack (masked in deployment logs), and a release
        # snapshot's secret versions -> decrypted values (given to its tasks).
        self.secret_values = secret_values
        self.resolve_secrets = resolve_secrets
        self.outbox = outbox or Outbox()  # where a deployment's end is told
        self.target_names = target_names  # every target the platform has (orphans' places)
        self._loops: dict[StageKey, StageLoop] = {}
        self._lock = threading.Lock()
        self._following = threading.Lock()  # held while the watch and health start
        self._followed = False
        self._stopped = threading.Event()
        self._stoppers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="task-stop")
        self.starters = ThreadPoolExecutor(max_workers=4, thread_name_prefix="task-start")
        # The platform's own engine (target local) and every other target's in use, each
        # with its task watch; ``watch`` is the platform's own engine's.
        self.engines = TargetEngines(engine, engines, self._new_watch)
        self.watch = self.engines.local_watch
        self._finishing: set[str] = set()  # nodes whose drain is being finished
        # Stacks (stage None) and stages whose tasks forget() or retire() is removing now.
        self._clearing: set[tuple[str, str | None]] = set()
        self._orphans_seen: set[str] = set()  # task ids the last sweep found orphaned
        self._routes_seen: set[str] = set()  # route names the last sweep found orphaned
        self._routes_left: set[str] = set()  # route names a deletion could not remove
        self._sweeper = Ticker(
            "orphan-sweep",
            "removing the tasks and routes of deleted stacks",
            settings.orphan_sweep,
            self._sweep,
        )
        self.health: ProbeScheduler[StageKey] = ProbeScheduler(self._nudge)
        self.ports = TaskPorts(settings.task_ports, self._task_ports_in_use)
        # Whether a release's image is still in the registry its engine pulls from.
        self.image_check = ImageCheck(
            sessions, images, lambda name: self.targets(name), settings.keep_releases
        )
        self._seams = Seams(
            sessions=sessions,
            engines=self.engines,
            router=router,
            health=self.health,
            ports=self.ports,
            image_url=self._image_url,
            login=self._login,
            platform_id=settings.platform_id,
            network_mode=settings.network_mode,
            starters=self.starters,
            stop_task=self.stop_task,
            rollback=self._roll_back,
            image=self.image_check.ask,
            resolve_secrets=lambda stack, versions: self.resolve_secrets(stack, versions),
            outbox=self.outbox,
        )

    # -- lifecycle

    def start(self) -> None:
        """List the engine's tasks and follow it; adopt every stage that has a release,
        and clean up tasks of deleted stacks: on the platform's own engine now, on every
        other target's from the stop pool (a target that does not answer delays nothing)."""
        self._follow_engine()
        with self.sessions() as session:
            pairs = session.execute(
                select(Stack.name, Release.stage)
                .join(Release, Release.stack_id == Stack.id)
                .outerjoin(
                    RetiredStage,
                    (RetiredStage.stack_id == Stack.id) & (RetiredStage.stage == Release.stage),
                )
                .where(RetiredStage.id.is_(None))
                .distinct()
            ).all()
        for stack, stage in pairs:
            self.wake(StageKey(stack, stage))
        self.remove_orphans(LOCAL)
        others = sorted(set(self.target_names()) - {LOCAL})
        if others:
            self._stoppers.submit(self._remove_orphans_on, others)

    def stop(self) -> None:
        self._stopped.set()
        self._sweeper.stop()
        with self._lock:
            loops = list(self._loops.values())
        for loop in loops:
            loop.stop()
        self.engines.stop()
        self.health.stop()
        self._stoppers.shutdown(wait=True)
        self.starters.shutdown(wait=True)

    def wake(self, key: StageKey) -> None:
        self._follow_engine()  # a loop's thread needs them (start() may not have run)
        with self._lock:
            if self._stopped.is_set():
                return
            loop = self._loops.get(key)
            if loop is None:
                loop = self._new_loop(key)
                self._loops[key] = loop
                loop.start()
        loop.nudge()

    def loop_for(self, key: StageKey) -> StageLoop:
        """The stage's loop, created without its thread if missing: a caller drives ``tick``.

        Unit tests use it to run one step at a time; ``wake`` is what starts a loop's thread.
        """
        with self._lock:
            loop = self._loops.get(key)
            if loop is None:
                loop = self._new_loop(key)
                self._loops[key] = loop
            return loop

    def task_health(self, key: StageKey) -> dict[str, TaskHealth]:
        """The stage's task health as its loop last judged it (HTTP checks included)."""
        with self._lock:
            loop = self._loops.get(key)
        return dict(loop.health) if loop is not None else {}

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
        """A stack was deleted: stop its loops, remove its tasks, then its routes. Raises
        StackyardError naming what could not be removed (after trying everything)."""
        self._clear(stack, None, routes)

    def retire(self, key: StageKey, routes: Sequence[Route] = ()) -> None:
        """A stage was retired (``stackyard stages remove``): stop its loop, remove its
        tasks, then its route; raises as ``forget`` does."""
        self._clear(key.stack, key.stage, routes)

    def _clear(self, stack: str, stage: str | None, routes: Sequence[Route]) -> None:
        """Stop the loops of ``stack`` (of its ``stage`` only, if given), remove their tasks
        on every engine, then ``routes``. What is left, the sweep removes."""
        with self._lock:
            keys = [k for k in self._loops if k.stack == stack and stage in (None, k.stage)]
            loops = [self._loops.pop(k) for k in keys]
        for loop in loops:
            loop.stop()
        labels = {LABEL_PLATFORM: self.settings.platform_id, LABEL_STACK: stack}
        if stage is not None:
            labels[LABEL_STAGE] = stage
        with self._lock:
            self._clearing.add((stack, stage))
        try:
            problems = self._remove_tasks(labels)
        finally:
            with self._lock:
                self._clearing.discard((stack, stage))
        for route in routes:
            try:
                self.router.remove_route(route)
            except StackyardError as exc:
                problems.append(f"route {route.name}: {exc.message}")
                with self._lock:
                    self._routes_left.add(route.name)  # the next sweep's look removes it
        if problems:
            what = f"stack {stack}" if stage is None else f"stage {stage} of {stack}"
            raise StackyardError(
                f"{what}: some of what it ran could not be removed: {'; '.join(problems)}",
                hint="the platform removes the tasks and routes left once their engine or "
                f"router answers (it looks every {self.settings.orphan_sweep:.0f} s; "
                "`stackyard doctor` lists the tasks meanwhile)",
            )

    def _remove_tasks(self, labels: Mapping[str, str]) -> list[str]:
        """Stop and remove the tasks with ``labels`` on every engine in use, all at once (a
        stop waits for its task to end: one after another, a stack of ten replicas took
        ten grace periods); what went wrong."""
        problems: list[str] = []
        seen: set[str] = set()  # two targets may name one engine: each task goes once
        found: list[tuple[TaskInfo, Engine]] = []
        for target, engine in self.engines.followed():
            try:
                tasks = [t for t in engine.list(labels) if t.id not in seen]
            except StackyardError as exc:
                problems.append(f"tasks on target {target}: {exc.message}")
                continue
            seen |= {t.id for t in tasks}
            found.extend((task, engine) for task in tasks)
        if found:
            with ThreadPoolExecutor(min(len(found), 8), "stack-delete") as pool:
                removed = pool.map(lambda pair: self._stop_and_remove(*pair), found)
                problems.extend(p for p in removed if p)
        return problems

    def sweep_orphans(self) -> None:
        """Remove the platform's tasks, as the task watches last listed them, whose stack
        no longer exists (or whose stage was retired), once two looks in a row found them
        so. A deletion whose engine failed midway (a swarm manager that restarted, a
        target that went away) leaves them running; they go once their engine answers,
        without a restart of the platform. The second look leaves a deletion under way
        its own clean-up."""
        try:
            tasks = self.engines.all_tasks()
        except StackyardError:  # the platform's own engine's tasks are unknown now
            tasks = self.engines.other_tasks()
        orphans = self._orphaned(tasks)
        seen, self._orphans_seen = self._orphans_seen, {t.id for t in orphans}
        for task in orphans:
            if task.id not in seen or self._stopped.is_set():
                continue
            log.info("removing task %s: its stack was deleted or its stage retired", task.name)
            problem = self._stop_and_remove(task, self.engines.engine_of(task.id))
            if problem:
                log.warning("could not remove task %s of a deleted stack or retired stage: %s "
                            "(the next look tries again)", task.name, problem)  # fmt: skip

    def _sweep(self) -> None:
        self.sweep_orphans()
        self.sweep_routes()

    def sweep_routes(self) -> None:
        """Remove the router's stage routes that no stage of an existing stack has, once two
        looks in a row found them so (one, for a route its deletion could not remove): a
        deletion while the router was down (or one of its Caddies) left them, and a
        restarted Caddy serves every route it had. Left, such a route kept its port from
        the stage that would get it next."""
        try:
            served = [name for name in self.router.routes() if may_be_stage_route(name)]
        except StackyardError as exc:
            log.debug("cannot list the router's routes now (%s); the next look tries", exc)
            self._routes_seen = set()
            return
        with self.sessions() as session:
            pairs = session.execute(
                select(Stack.name, StageRoute.stage).join(Stack, Stack.id == StageRoute.stack_id)
            ).all()
        with self._lock:
            clearing = set(self._clearing)
        known = {stage_route_name(StageKey(stack, stage)) for stack, stage in pairs}
        known |= {stage_route_name(StageKey(stack, stage)) for stack, stage in clearing if stage}
        deleting = [stack for stack, stage in clearing if stage is None]
        orphans = {
            name
            for name in served
            if name not in known and not any(name.startswith(f"{s}-") for s in deleting)
        }
        seen, self._routes_seen = self._routes_seen, orphans
        with self._lock:
            left, self._routes_left = self._routes_left, self._routes_left & orphans
        for name in sorted(orphans & (seen | left)):
            if self._stopped.is_set():
                return
            log.info("removing route %s: no stage has it (deleted or retired)", name)
            try:
                self.router.remove_route(Route.named(name))
            except StackyardError as exc:
                log.warning("could not remove route %s, which no stage has: %s (the next look "
                            "tries again)", name, exc.message)  # fmt: skip

    def _remove_orphans_on(self, targets: Sequence[str]) -> None:
        for target in targets:
            self.remove_orphans(target)

    def remove_orphans(self, target: str) -> None:
        """Remove the platform's tasks on the target's engine whose stack no longer exists
        (deleted while the platform or that engine was down). The tasks are listed before
        the stacks are read, so a stack created meanwhile keeps its tasks. A target no
        stage runs on is reached for this only (its engine is closed after)."""
        labels = {LABEL_PLATFORM: self.settings.platform_id}
        try:
            with self.engines.reach(target) as engine:
                for task in self._orphaned(engine.list(labels)):
                    log.info("target %s: removing orphan task %s", target, task.name)
                    problem = self._stop_and_remove(task, engine)
                    if problem:
                        log.warning("target %s: could not remove orphan task %s: %s",
                                    target, task.name, problem)  # fmt: skip
        except StackyardError as exc:  # the engine may be down; the stage loops retry
            log.warning("target %s: could not look for orphan tasks: %s", target, exc)

    def _orphaned(self, tasks: Iterable[TaskInfo]) -> list[TaskInfo]:
        """The ``tasks`` whose stack no longer exists or whose stage was retired (neither
        being cleared now). Listed before the stacks are read: a stack created meanwhile
        keeps its tasks."""
        with self.sessions() as session:
            stacks = set(session.scalars(select(Stack.name)))
            retired = {
                (str(stack), str(stage))
                for stack, stage in session.execute(
                    select(Stack.name, RetiredStage.stage).join(
                        Stack, Stack.id == RetiredStage.stack_id
                    )
                )
            }
        with self._lock:
            clearing = set(self._clearing)
        stacks |= {stack for stack, stage in clearing if stage is None}
        retired -= clearing

        def orphaned(task: TaskInfo) -> bool:
            stack, stage = task.labels.get(LABEL_STACK), task.labels.get(LABEL_STAGE)
            return stack not in stacks or (stack, stage) in retired

        return [t for t in tasks if orphaned(t)]

    def _stop_and_remove(self, task: TaskInfo, engine: Engine) -> str | None:
        """Stop and remove a task on its engine; what went wrong, or None."""
        watch = self.engines.watch_of(task.id)
        try:
            engine.stop(task.id, 5)
            engine.remove(task.id)
        except StackyardError as exc:
            return f"task {task.name}: {exc.message}"
        watch.drop(task.id, wake=False)
        return None

    # -- what the stage loops share

    def _follow_engine(self) -> None:
        """Start the task watch and the health scheduler, once."""
        with self._following:
            if self._followed or self._stopped.is_set():
                return
            self._followed = True
            self.engines.start()
            self.health.start()
            self._sweeper.start()

    def stop_task(self, key: StageKey, task_id: str, timeout: float) -> None:
        """Stop a task on the stop pool: a stop can take ``timeout`` seconds."""
        self._stoppers.submit(self.stop_now, key, task_id, timeout)

    def stop_now(self, key: StageKey, task_id: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; then tell the watch how it ended. A stop
        that fails is logged, and the stage's next step sends it again. It goes to the
        engine the task lives on."""
        watch = self.engines.watch_of(task_id)
        try:
            watch.engine.stop(task_id, timeout)
        except StackyardError as exc:
            log.warning("stage %s: stopping task %s failed: %s; trying again", key, task_id, exc)
            with self._lock:
                loop = self._loops.get(key)
            if loop is not None:
                loop.stop_failed(task_id)
            return
        try:
            watch.refresh(task_id)  # an engine without events says nothing by itself
        except StackyardError as exc:
            log.warning("stage %s: task %s was stopped; reading it failed: %s", key, task_id, exc)

    def _nudge(self, key: StageKey) -> None:
        """The watch or the health scheduler saw a change: wake the stage's loop, if any
        (a task of a stage without a loop is an orphan, removed at start)."""
        with self._lock:
            loop = self._loops.get(key)
        if loop is not None:
            loop.nudge()
        self.finish_drains()

    # -- nodes (engines with nodes)

    def finish_drains(self) -> None:
        """A node being drained (``stackyard nodes drain``) that holds no task of the platform
        any more becomes ``drain`` for the engine too; its label goes. On every target's
        engine that has nodes (the platform's own, a swarm target's); only the drains this
        platform started (the label names it; "1" is an older Stackyard's)."""
        for watch in self.engines.watches():
            self._finish_drains_of(watch)

    def _finish_drains_of(self, watch: TaskWatch) -> None:
        try:
            nodes = watch.nodes()
            if not nodes:
                return  # an engine without nodes (a Docker engine), or none listed yet
            tasks = watch.all_tasks()
        except StackyardError:
            return  # not listed yet: the next change calls again
        for node in nodes:
            # Another platform on the same swarm drains it for its own tasks: finishing that
            # drain is its job (once this platform's tasks left, its own may not have).
            if node.labels.get(NODE_LABEL_DRAINING) not in (self.settings.platform_id, "1"):
                continue
            if any(t.node == node.id and t.state is not TaskState.EXITED for t in tasks):
                continue
            with self._lock:
                if node.id in self._finishing or self._stopped.is_set():
                    continue
                self._finishing.add(node.id)
            self._stoppers.submit(self._finish_drain, watch, node)

    def _finish_drain(self, watch: TaskWatch, node: NodeInfo) -> None:
        try:
            watch.engine.update_node(
                node.id, availability=Availability.DRAIN, labels={NODE_LABEL_DRAINING: None}
            )
            log.info("node %s (%s): its tasks moved to other nodes; drained", node.id, node.address)
        except StackyardError as exc:
            log.warning("node %s: finishing its drain failed (%s); trying again", node.id, exc)
        finally:
            with self._lock:
                self._finishing.discard(node.id)
        try:
            watch.resync()
        except StackyardError as exc:
            log.warning("node %s was drained; listing the engine failed: %s", node.id, exc)

    def _nodes_changed(
        self,
        before: Mapping[str, NodeInfo],
        after: Mapping[str, NodeInfo],
        tasks: list[TaskInfo],
    ) -> None:
        """A listing saw nodes change: a node that went down is recorded as an event of each
        stage that had tasks on it (its loop replaces them); drains may be done."""
        for node_id, node in after.items():
            old = before.get(node_id)
            if old is None or not old.ready or node.ready:
                continue
            lost: dict[StageKey, list[str]] = {}
            for task in tasks:
                key = StageKey.of(task.labels)
                if task.node == node_id and key is not None:
                    lost.setdefault(key, []).append(task.name)
            for key, names in lost.items():
                StageLog(key, self.sessions, lambda: []).event(
                    "node",
                    f"node {node.name or node.id} ({node.address}) is {node.state}: its "
                    f"task(s) {', '.join(names)} are lost and replaced on other nodes",
                )
        self.finish_drains()

    def _new_loop(self, key: StageKey) -> StageLoop:
        stage_log = StageLog(
            key,
            self.sessions,
            lambda: [self.images.credentials.password, *self.secret_values(key.stack)],
            self.outbox,
        )
        observer = StageObserver(
            key,
            sessions=self.sessions,
            engines=self.engines,
            health=self.health,
            router=self.router,
            route_ports=self.settings.route_ports,
            masker=stage_log.masker,
            domains=self.settings.domains,
        )
        settings = self.settings
        return StageLoop(
            key,
            observer=observer,
            executor=Executor(key, self._seams, stage_log),
            stage_log=stage_log,
            sessions=self.sessions,
            pace=Pace(tick=settings.tick, retry=settings.retry, safety_tick=settings.safety_tick),
            on_stop=self.health.forget,
        )

    def _new_watch(self, target: str, engine: Engine) -> TaskWatch:
        """The task watch of a target's engine: every task of the platform on it."""
        settings = self.settings
        return TaskWatch(
            engine,
            settings.platform_id,
            self._nudge,
            resync=settings.resync,
            poll=settings.poll,
            retry=settings.retry,
            on_nodes=self._nodes_changed,
            name="task-watch" if target == LOCAL else f"task-watch-{target}",
            where="the engine" if target == LOCAL else f"target {target}'s engine",
            # A target's engine may stay away for long (a region down): a try a minute.
            # The platform's own is tried every 5 s at most, as every stage waits on it.
            retry_limit=5.0 if target == LOCAL else TARGET_RETRY_LIMIT,
        )

    def _roll_back(self, stack: str, stage: str, number: int, source: str) -> Release:
        """The automatic rollback after a failed deployment: refused, naming the release and
        its image, when the stack's registry no longer has that image (the copy's retag
        would fail with the registry's plain "not found"); a registry that cannot tell
        is not a "no"."""
        answer = self.image_check.ask(stack, stage, number, from_home=True)
        if answer.gone:
            raise answer.refusal()
        if answer.present is None:
            log.warning("stage %s/%s: %s; rolling back anyway", stack, stage, answer.unsure())
        return self.rollback(stack, stage, number, source)

    def _image_url(self, stack: str, target: str) -> str:
        registry = self.settings.task_registry
        url, login = self.images.pulled_from(stack, self.targets(target))
        if registry and login is self.images.credentials:
            return f"{registry}/{stack}"  # the platform's registry, as the nodes reach it
        return url

    def _login(self, stack: str, target: str) -> RegistryLogin:
        _url, login = self.images.pulled_from(stack, self.targets(target))
        registry = self.settings.task_registry
        return (
            replace(login, registry=registry)
            if registry and login is self.images.credentials
            else login
        )

    def _task_ports_in_use(self) -> set[int]:
        return {
            int(task.labels[LABEL_PORT])
            for task in self.engines.all_tasks()
            if task.labels.get(LABEL_PORT, "").isdigit()
        }
