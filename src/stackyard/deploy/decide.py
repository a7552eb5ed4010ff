"""Decide a stage's next step: one observation in, the whole plan out, as plain data.

Pure: no I/O, no clock, no handles. deploy/observe.py reads the store, the engine's tasks
(from the shared task watch), the health judgements and the router into a ``StageView``;
``decide`` returns a ``StagePlan``; deploy/execute.py carries it out through the seams.
The rollout arithmetic is ``plan_rollout`` (deploy/plan.py). Around it, this module
decides which deployment runs, which tasks count as failed (each once, also after a
restart), heal or fail, whether to roll back and to which release, the stage's route
(created, or moved to another port), the deployment's record, and the lines that explain
each choice. What the executor then reports is the outcome of its actions (a task
started, the route set, a rollback made).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from stackyard.deploy.health import HealthSettings
from stackyard.deploy.placement import choose_nodes, eligible, no_node_reason, satisfying
from stackyard.deploy.plan import (
    Desired,
    ObservedTask,
    Outcome,
    Plan,
    TaskHealth,
    failure_threshold,
    plan_rollout,
)
from stackyard.engines.base import NodeInfo, NodeUse
from stackyard.router.base import Route, TlsMode

NO_RELEASE = -1  # the release of a task without a (numeric) release label


class DeploymentStatus(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SUPERSEDED = "SUPERSEDED"


# -- what observe() saw


@dataclass(frozen=True)
class ReleaseFacts:
    """A release as the decisions need it. ``config`` is its config snapshot as canonical
    JSON, so two releases with equal configs have equal strings."""

    number: int
    digest: str
    config: str


@dataclass(frozen=True)
class DeploymentFacts:
    """The stage's active deployment (IN_PROGRESS, else the oldest QUEUED)."""

    id: int
    number: int
    release: int
    digest: str
    status: DeploymentStatus
    desired: int
    trigger: str
    failures: int
    reason: str
    log_path: str


@dataclass(frozen=True)
class StageSettings:
    """The stage settings of the release the stage is driven to (its config snapshot)."""

    replicas: int = 1
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    drain_seconds: float = 2.0
    stop_timeout: float = 10.0
    port: int | None = None  # a port the stage chose in stackyard.yml
    host: str | None = None
    constraints: tuple[str, ...] = ()  # placement.constraints (Swarm's syntax)
    spread: str = "node"  # placement.spread: node, or none (Swarm chooses)
    aliases: tuple[str, ...] = ()  # its other host names
    tls: TlsMode = "off"


@dataclass(frozen=True)
class EnvFile:
    path: str  # in the container
    template_path: str  # in the repository, for error messages
    template: str


@dataclass(frozen=True)
class TaskRecipe:
    """Everything needed to start one task of the target release (the executor adds a
    port, a name and the secrets' values)."""

    release: int
    digest: str
    deployment: int  # its number, 0 outside a deployment (self-healing)
    variables: tuple[tuple[str, str], ...] = ()
    secrets: tuple[tuple[str, int], ...] = ()  # name -> version, resolved at start
    env_file: EnvFile | None = None
    container_port: int = 8080
    cpu: float = 0.5
    memory: int = 256 * 1024 * 1024
    pids_limit: int = 1024
    read_only: bool = False
    stop_timeout: float = 10.0
    health: HealthSettings = field(default_factory=HealthSettings)
    target: str = "local"  # the target whose registry its image is pulled from


@dataclass(frozen=True)
class RouteFacts:
    """The stage's route: its address in the store, what the router serves for it, and,
    when the route must be created or given a port, whether that port is free."""

    name: str
    stored_port: int | None  # the stage's route row (None: no row, or no port yet)
    stored_host: str | None
    has_row: bool
    upstreams: tuple[str, ...] | None  # None: the router has no such route
    listen_host: str = "127.0.0.1"  # where the router listens for port routes
    port_free: bool = True  # checked when the router has no route on that port
    spare_port: int | None = None  # a free port, when the platform must pick one
    stored_aliases: tuple[str, ...] = ()  # the names and TLS mode the router was last given
    stored_tls: str = "off"


@dataclass(frozen=True)
class TaskFacts:
    """One task of the stage as the engine and the health checks report it. Output that
    comes from the app (health output, log lines) is already masked."""

    id: str
    name: str
    release: int  # its release label, NO_RELEASE without one
    digest: str
    address: str  # "host:port", "" when the engine reports none
    running: bool
    exit_code: int | None = None
    health: TaskHealth = TaskHealth.STARTING  # EXITED once it is not running
    health_output: str = ""
    last_lines: tuple[str, ...] = ()  # read only for a bad task not yet accounted for
    node: str = ""  # the node's id, on an engine with nodes
    where: str = ""  # "node NAME (ADDRESS)", for the lines that explain
    error: str = ""  # the engine's own reason (a lost node, a pull that failed)


@dataclass(frozen=True)
class StageMemory:
    """What the stage's loop remembers between steps; lost on restart, and rebuilt safely."""

    deployment: int | None = None  # the id of the deployment it drives (begun)
    counted: frozenset[str] = frozenset()  # failed tasks already counted
    stopping: frozenset[str] = frozenset()  # tasks it sent a stop
    unrouted_at: tuple[tuple[str, float], ...] = ()  # task -> when it left the route

    def drain_started(self, task_id: str) -> float | None:
        return dict(self.unrouted_at).get(task_id)


@dataclass(frozen=True)
class Target:
    """The release the stage is driven to (the active deployment's, else its current one),
    with the settings of its snapshot and the stage's route."""

    release: ReleaseFacts
    route: RouteFacts
    settings: StageSettings = field(default_factory=StageSettings)
    recipe: TaskRecipe | None = None  # None in tests that start no task


@dataclass(frozen=True)
class StageView:
    """One observation of a stage: plain values only, no engine, router or store."""

    stack: str
    stage: str
    now: float  # the loop's monotonic clock
    memory: StageMemory = field(default_factory=lambda: StageMemory())
    target: Target | None = None  # None: the stage has nothing to run
    deployment: DeploymentFacts | None = None
    last_completed: ReleaseFacts | None = None  # the release of the last COMPLETED deployment
    releases: tuple[ReleaseFacts, ...] = ()  # the releases the tasks' labels name
    tasks: tuple[TaskFacts, ...] = ()
    blind: Blocked | None = None  # the engine or the router could not be asked
    nodes: tuple[NodeInfo, ...] | None = None  # None: the engine has no nodes
    # node id -> what it holds: every task there (of any platform, or none), reservations
    node_use: tuple[tuple[str, NodeUse], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.stack}/{self.stage}"


# -- what decide() returns


@dataclass(frozen=True)
class RouteRow:
    """The stage's route address to store."""

    port: int | None
    host: str | None
    aliases: tuple[str, ...] = ()
    tls: str = "off"


@dataclass(frozen=True)
class RouteChange:
    """Create the route (the router has none) or set its upstreams, to these tasks."""

    route: Route
    create: bool
    task_ids: tuple[str, ...]
    addresses: tuple[str, ...]
    leaving: tuple[str, ...] = ()  # routed tasks this change takes out: their drain starts


@dataclass(frozen=True)
class StopTask:
    id: str
    name: str
    timeout: float


@dataclass(frozen=True)
class StartTasks:
    count: int
    failures_count: bool  # a task that cannot start counts against the deployment
    nodes: tuple[str | None, ...] = ()  # the node of each (engines with nodes); None: any


@dataclass(frozen=True)
class Finish:
    status: DeploymentStatus  # COMPLETED or FAILED
    reason: str = ""
    no_rollback: str = ""  # FAILED without a rollback: why the stage does not go back


@dataclass(frozen=True)
class DeploymentUpdate:
    """Changes to the active deployment's record, applied in one transaction."""

    id: int
    failures: int = 0  # failed tasks to add
    reason: str | None = None  # the last failure's reason
    tasks_stopped: int = 0  # to add
    tasks_healthy: int = 0
    tasks_routed: int = 0
    finish: Finish | None = None


@dataclass(frozen=True)
class Rollback:
    """A new release that copies ``to``'s digest and config, and its deployment."""

    to: int
    digest: str
    source: str


@dataclass(frozen=True)
class Blocked:
    """The stage cannot go on: its port is taken (permanent: the deployment fails), or the
    engine or the router could not be asked (the step is retried, within a time budget)."""

    message: str
    hint: str = ""
    permanent: bool = True


@dataclass(frozen=True)
class StagePlan:
    """Everything one step does, in the order the executor does it."""

    begin: DeploymentFacts | None = None  # claim this deployment; the loop drives it now
    counted: frozenset[str] = frozenset()  # the loop's counted failed tasks after this step
    failed: tuple[str, ...] = ()  # tasks failed in this step (each counted once)
    lines: tuple[str, ...] = ()  # why: said before anything is done
    events: tuple[str, ...] = ()  # heal events to record
    route_row: RouteRow | None = None
    route: RouteChange | None = None
    stop: tuple[StopTask, ...] = ()
    remove: tuple[str, ...] = ()
    start: StartTasks | None = None
    deployment: DeploymentUpdate | None = None
    closing_lines: tuple[str, ...] = ()  # the outcome, said after the actions
    rollback: Rollback | None = None
    blocked: Blocked | None = None
    busy: bool = False  # look again soon: a deployment is active, or this step acted
    wait: float | None = None  # seconds until a drain ends (a timed step); None: none

    @property
    def acts(self) -> bool:
        return bool(
            self.begin
            or self.failed
            or self.route_row
            or self.route
            or self.stop
            or self.remove
            or self.start
            or self.rollback
            or (self.deployment and self.deployment.finish)
        )


# -- the decisions


def decide(view: StageView) -> StagePlan:
    """The stage's next step toward its target release (or toward nothing)."""
    target, deployment = view.target, view.deployment
    begin = deployment is not None and view.memory.deployment != deployment.id
    if view.blind is not None:
        # The deployment starts all the same: its error budget runs from now.
        return StagePlan(
            begin=deployment if begin else None,
            counted=frozenset() if begin else view.memory.counted,
            lines=_begin_lines(deployment, begin),
            blocked=view.blind,
        )
    if target is None:
        return _clear_out(view)
    release, settings = target.release, target.settings
    counted = frozenset() if begin else view.memory.counted
    draining = {n.id for n in view.nodes or () if n.draining}
    observed = [_observed(task, view, target, draining) for task in view.tasks]
    if begin and deployment is not None and deployment.failures > 0:
        # Begun by an earlier control plane: its failed new tasks were counted before the
        # restart (and stopped, which the memory lost). Count each failed task once.
        counted |= {t.id for t in observed if t.release == release.number and _bad(t)}
    desired = Desired(
        release=release.number,
        replicas=settings.replicas,
        minimum_healthy_percent=settings.minimum_healthy_percent,
        maximum_percent=settings.maximum_percent,
        drain_seconds=settings.drain_seconds,
        failure_threshold=failure_threshold(settings.replicas) if deployment else None,
    )
    rollout = plan_rollout(
        desired,
        observed,
        failures=deployment.failures if deployment else 0,
        now=view.now,
        counted=counted,
    )
    route_row, address, moved = _route_address(target.route, settings)
    if address is None:
        return _blocked(view, begin, _port_taken(view.name, target))
    tasks = {t.id: t for t in view.tasks}
    reasons = [failure_reason(tasks[i]) for i in rollout.failed]
    heal = deployment is None
    start, no_node = _start(view, target, rollout, observed, heal)
    plan = StagePlan(
        begin=deployment if begin else None,
        counted=counted | set(rollout.failed),
        failed=rollout.failed,
        lines=(*_begin_lines(deployment, begin), *reasons, *moved),
        events=tuple(f"{reason}; replacing it" for reason in reasons) if heal else (),
        route_row=route_row,
        route=_route_change(
            view, target, rollout, observed, address, renamed=route_row is not None
        ),
        stop=tuple(StopTask(i, tasks[i].name, settings.stop_timeout) for i in rollout.stop),
        remove=rollout.remove,
        start=start,
        blocked=no_node,
    )
    return _conclude(view, target, plan, rollout, observed, reasons)


def _start(
    view: StageView, target: Target, rollout: Plan, observed: list[ObservedTask], heal: bool
) -> tuple[StartTasks | None, Blocked | None]:
    """The tasks to start and, on an engine with nodes, the node of each; or, when no node
    may take them, the reason: retried while a node the constraints hold for is down,
    paused or drained (it may come back), at once final when the constraints hold for no
    node of the cluster (a label no node has: waiting would not help)."""
    if not rollout.start or rollout.outcome is Outcome.FAILED:
        return None, None
    if view.nodes is None:
        return StartTasks(rollout.start, failures_count=not heal), None
    settings = target.settings
    nodes = eligible(view.nodes, settings.constraints)
    if not nodes:
        reason = no_node_reason(view.name, settings.constraints, view.nodes)
        if not satisfying(view.nodes, settings.constraints):
            hint = (
                "the constraints hold for no node of the cluster: label a node so that they "
                "do (docker node update --label-add), or change placement in stackyard.yml; "
                "then deploy again"
            )
            return None, Blocked(reason, hint, permanent=True)
        hint = (
            "a node the constraints hold for is down, paused or being drained: start or "
            "activate it (stackyard nodes activate), label another (docker node update "
            "--label-add), or change placement in stackyard.yml"
        )
        return None, Blocked(reason, hint, permanent=False)
    facts = {t.id: t for t in view.tasks}
    staying = Counter(
        facts[t.id].node
        for t in observed
        if t.release == target.release.number
        and t.health in (TaskHealth.HEALTHY, TaskHealth.STARTING)
    )
    avoid = {facts[t.id].node for t in observed if _bad(t) or t.id in rollout.failed}
    chosen = choose_nodes(
        rollout.start,
        replicas=settings.replicas,
        nodes=nodes,
        staying=staying,
        use=dict(view.node_use),
        need=NodeUse(1, recipe.cpu, recipe.memory) if (recipe := target.recipe) else NodeUse(1),
        avoid=avoid,
        spread=settings.spread,
    )
    return StartTasks(rollout.start, failures_count=not heal, nodes=chosen), None


def _route_address(
    route: RouteFacts, settings: StageSettings
) -> tuple[RouteRow | None, Route | None, tuple[str, ...]]:
    """The stage's route address: the row to store (if it changes), the route (None when
    its port is taken and the stage chose it), and the line saying it moved."""
    if settings.host is not None:
        port, host = None, settings.host
    elif settings.port is not None:
        port, host = settings.port, None
    else:
        port, host = route.stored_port or route.spare_port, None
    moved: tuple[str, ...] = ()
    creating = route.upstreams is None
    if port is not None and creating and not route.port_free:
        if settings.port is not None or route.spare_port is None:
            return None, None, ()
        moved = (f"port {port} was taken by another process; serving on {route.spare_port}",)
        port = route.spare_port
    aliases, tls = (settings.aliases, settings.tls) if host else ((), "off")
    stored = (route.stored_port, route.stored_host, route.stored_aliases, route.stored_tls)
    changed = not route.has_row or stored != (port, host, aliases, tls)
    row = RouteRow(port, host, aliases, tls) if changed else None
    return row, Route(name=route.name, port=port, host=host, aliases=aliases, tls=tls), moved


def _port_taken(stage: str, target: Target) -> Blocked:
    route = target.route
    port = target.settings.port if target.settings.port is not None else route.stored_port
    return Blocked(
        f"stage {stage}: port {route.listen_host}:{port} is in use by another process",
        hint="stop that process, or set another `port:` for the stage in stackyard.yml",
    )


def _route_change(
    view: StageView,
    target: Target,
    rollout: Plan,
    observed: list[ObservedTask],
    route: Route,
    *,
    renamed: bool = False,
) -> RouteChange | None:
    """Create the route when the router has none, or give it its new names and TLS mode
    (``renamed``: ensure_route again); else set its upstreams when the rollout moves them
    or an upstream is no routed task's address."""
    creating = target.route.upstreams is None or renamed
    addresses = {t.id: t.address for t in view.tasks}
    routed = tuple(t.id for t in observed if t.routed)
    # An upstream that is no routed task's address (a task that moved to another node, or
    # whose node's address changed) leaves the route at once.
    stale = not creating and set(target.route.upstreams or ()) != {addresses[i] for i in routed}
    if rollout.route is None and not creating and not stale:
        return None
    ids = rollout.route if rollout.route is not None else routed
    leaving = tuple(t.id for t in observed if t.routed and t.id not in ids)
    return RouteChange(
        route=route,
        create=creating,
        task_ids=ids,
        addresses=tuple(addresses[i] for i in ids),
        leaving=leaving,
    )


def _conclude(
    view: StageView,
    target: Target,
    plan: StagePlan,
    rollout: Plan,
    observed: list[ObservedTask],
    reasons: list[str],
) -> StagePlan:
    """The deployment's record, its outcome and rollback, and when to look again."""
    deployment = view.deployment
    if deployment is not None:
        new = [t for t in observed if t.release == target.release.number]
        finish: Finish | None = None
        closing: tuple[str, ...] = ()
        rollback: Rollback | None = None
        if rollout.outcome is Outcome.COMPLETED:
            finish = Finish(DeploymentStatus.COMPLETED)
            closing = ("deployment COMPLETED",)
        elif rollout.outcome is Outcome.FAILED:
            finish, closing, rollback = _failure(view, target, deployment, reasons)
        update = DeploymentUpdate(
            id=deployment.id,
            failures=len(plan.failed),
            reason=reasons[-1] if reasons else None,
            tasks_stopped=len(plan.stop),
            tasks_healthy=sum(1 for t in new if t.health is TaskHealth.HEALTHY),
            tasks_routed=sum(1 for t in new if t.routed),
            finish=finish,
        )
        plan = replace(plan, deployment=update, closing_lines=closing, rollback=rollback)
    ongoing = deployment is not None and (plan.deployment is None or not plan.deployment.finish)
    return replace(plan, busy=ongoing or plan.acts, wait=_next_drain(view, target, plan))


def _failure(
    view: StageView, target: Target, deployment: DeploymentFacts, reasons: list[str]
) -> tuple[Finish, tuple[str, ...], Rollback | None]:
    """The circuit breaker tripped: the reason, and whether to go back, and to what."""
    threshold = failure_threshold(target.settings.replicas)
    failed = deployment.failures + len(reasons)
    last = reasons[-1] if reasons else deployment.reason
    reason = f"{failed} new task(s) failed (circuit breaker at {threshold}); {last}"
    lines = [f"deployment FAILED: {reason}"]
    choice = rollback_choice(view.last_completed, target.release, deployment.number)
    if isinstance(choice, str):
        return Finish(DeploymentStatus.FAILED, reason, no_rollback=choice), (*lines, choice), None
    return Finish(DeploymentStatus.FAILED, reason), tuple(lines), choice


def rollback_choice(
    previous: ReleaseFacts | None, failed: ReleaseFacts | None, deployment: int
) -> Rollback | str:
    """Where a failed deployment goes back to, or the line that says why it does not."""
    if previous is None:
        return "no earlier COMPLETED release to go back to"
    if failed is not None and (previous.digest, previous.config) == (failed.digest, failed.config):
        # The failed release is a copy of the last COMPLETED one (a failed rollback):
        # rolling back to it again would repeat the failure, forever.
        return (
            f"not rolling back: release {previous.number}, the last COMPLETED one, has the "
            "image and config that just failed"
        )
    return Rollback(previous.number, previous.digest, f"rollback: deployment {deployment} failed")


def _blocked(view: StageView, begin: bool, blocked: Blocked) -> StagePlan:
    """The route cannot be served: fail the active deployment at once (no rollback: the
    port is the stage's, whatever release runs), and back off."""
    deployment = view.deployment
    if deployment is None:
        return StagePlan(blocked=blocked, lines=(f"{blocked.message} ({blocked.hint})",))
    reason = f"{blocked.message} ({blocked.hint})"
    return StagePlan(
        begin=deployment if begin else None,
        counted=frozenset() if begin else view.memory.counted,
        lines=_begin_lines(deployment, begin),
        deployment=DeploymentUpdate(
            id=deployment.id, finish=Finish(DeploymentStatus.FAILED, reason)
        ),
        closing_lines=(f"deployment FAILED: {reason}",),
        blocked=blocked,
    )


def _clear_out(view: StageView) -> StagePlan:
    """No release to serve (the first deployment failed, or the stack is gone): stop the
    leftovers, remove the ones that exited."""
    stop = tuple(
        StopTask(t.id, t.name, 10.0)
        for t in view.tasks
        if t.running and t.id not in view.memory.stopping
    )
    remove = tuple(t.id for t in view.tasks if not t.running)
    plan = StagePlan(counted=view.memory.counted, stop=stop, remove=remove)
    return replace(plan, busy=plan.acts)


def _begin_lines(deployment: DeploymentFacts | None, begin: bool) -> tuple[str, ...]:
    if deployment is None or not begin:
        return ()
    return (
        f"deployment {deployment.number}: release {deployment.release} ({deployment.digest}), "
        f"{deployment.desired} task(s), trigger {deployment.trigger}",
    )


def failure_reason(task: TaskFacts) -> str:
    """Why a task failed: where it ran, how it ended (the engine's own reason, when it has
    one), its last health check, its last log lines."""
    if task.running:
        state = "is unhealthy"
    elif task.error:
        state = f"ended: {task.error}"
    else:
        state = f"exited with status {task.exit_code}"
    reason = f"task {task.name}{f' on {task.where}' if task.where else ''} {state}"
    if task.health_output:
        reason += f"; last health check: {task.health_output}"
    if task.last_lines:
        reason += "; last log lines: " + " | ".join(task.last_lines)
    return reason


def equivalent_release(
    task: TaskFacts, target: ReleaseFacts, releases: Mapping[int, ReleaseFacts]
) -> int:
    """The release a task counts as: a task of another release with the target's digest
    and config (a rollback copy, a variable set back) counts as the target's."""
    if task.release == target.number:
        return task.release
    other = releases.get(task.release)
    if (
        other is not None
        and (other.digest, other.config) == (target.digest, target.config)
        and task.digest == target.digest
    ):
        return target.number
    return task.release


def _observed(task: TaskFacts, view: StageView, target: Target, draining: set[str]) -> ObservedTask:
    """A task as the rollout sees it. One on a node being drained counts as of no release:
    it is replaced elsewhere, and leaves once its replacement serves."""
    stopping = task.id in view.memory.stopping
    health = task.health
    if stopping and health is not TaskHealth.EXITED:
        health = TaskHealth.STOPPING
    upstreams = target.route.upstreams
    releases = {r.number: r for r in view.releases}
    release = equivalent_release(task, target.release, releases)
    return ObservedTask(
        id=task.id,
        release=NO_RELEASE if task.node and task.node in draining else release,
        health=health,
        routed=upstreams is not None and task.address in upstreams,
        unrouted_at=view.memory.drain_started(task.id),
        stopped_by_us=stopping,
    )


def _bad(task: ObservedTask) -> bool:
    return task.health in (TaskHealth.UNHEALTHY, TaskHealth.EXITED)


def _next_drain(view: StageView, target: Target, plan: StagePlan) -> float | None:
    """Seconds until the first drain under way ends: then a leaving task can stop."""
    drain = target.settings.drain_seconds
    done = view.memory.stopping | {s.id for s in plan.stop} | set(plan.remove)
    leaving = plan.route.leaving if plan.route else ()
    ends = [drain for task_id in leaving if task_id not in done]
    for task_id, since in view.memory.unrouted_at:
        if task_id not in done:
            ends.append(max(0.0, since + drain - view.now))
    return min(ends) if ends else None
