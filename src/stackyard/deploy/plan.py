"""Decide the next step of a rollout: desired state + observed tasks → a plan, as plain data.

Pure functions, no I/O: the executor (deploy/executor.py) observes the engine, the router
and the health checks, calls ``plan_rollout``, and applies the plan through the seams.
The same function drives a deployment (target = the new release) and self-healing
(target = the stage's current release, with the circuit breaker off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class TaskHealth(StrEnum):
    STARTING = "starting"  # running, no passing health check yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    STOPPING = "stopping"  # a stop was sent; waiting for the engine to say it exited
    EXITED = "exited"


@dataclass(frozen=True)
class ObservedTask:
    id: str
    release: int
    health: TaskHealth
    routed: bool
    unrouted_at: float | None = None  # when it left the route (its drain started)
    stopped_by_us: bool = False  # it exits because the platform stopped it: no failure


@dataclass(frozen=True)
class Desired:
    release: int
    replicas: int
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    drain_seconds: float = 2.0
    failure_threshold: int | None = 3  # None: self-healing, never give up

    @property
    def min_healthy(self) -> int:
        return math.ceil(self.replicas * self.minimum_healthy_percent / 100)

    @property
    def max_tasks(self) -> int:
        return max(self.replicas, math.floor(self.replicas * self.maximum_percent / 100))


def failure_threshold(replicas: int) -> int:
    """ECS circuit breaker: ceil(0.5 * desired), clamped to 3..200."""
    return min(200, max(3, math.ceil(0.5 * replicas)))


class Outcome(StrEnum):
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Plan:
    """One step. ``route`` is the full new upstream set (task ids), or None for no change."""

    start: int = 0
    route: tuple[str, ...] | None = None
    stop: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # new tasks that failed in this step (count them once)
    outcome: Outcome = Outcome.PROGRESS
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_noop(self) -> bool:
        return (
            self.start == 0
            and self.route is None
            and not self.stop
            and not self.remove
            and not self.failed
        )


def _bad(task: ObservedTask) -> bool:
    return task.health in (TaskHealth.UNHEALTHY, TaskHealth.EXITED)


def _alive(task: ObservedTask) -> bool:
    return task.health in (TaskHealth.STARTING, TaskHealth.HEALTHY)


def _serving(task: ObservedTask) -> bool:
    """Healthy, or in the route and not judged yet: a control plane that just started
    adopts routed tasks whose first probe is still to come, and must not take them out of
    the route (the data plane served them all along). A failed probe judges them."""
    return task.health is TaskHealth.HEALTHY or (task.health is TaskHealth.STARTING and task.routed)


def plan_rollout(
    desired: Desired,
    tasks: list[ObservedTask],
    *,
    failures: int,
    now: float,
    counted: frozenset[str] = frozenset(),
) -> Plan:
    """The next step toward ``desired``.

    ``failures`` is how many new tasks already failed in this deployment; ``counted`` are
    the ids already counted among them, so a failed task is counted once.
    """
    new = [t for t in tasks if t.release == desired.release]
    old = [t for t in tasks if t.release != desired.release]
    remove = tuple(t.id for t in tasks if t.health is TaskHealth.EXITED)
    failed = tuple(t.id for t in new if _bad(t) and not t.stopped_by_us and t.id not in counted)
    threshold = desired.failure_threshold
    if threshold is not None and failures + len(failed) >= threshold:
        return _give_up(tasks, old, new, remove, failed)

    # New tasks that serve or will: the first `replicas` serving ones, then starting ones.
    serving_new = [t.id for t in new if _serving(t)][: desired.replicas]
    room = max(0, desired.replicas - len(serving_new))
    coming_new = [t.id for t in new if t.health is TaskHealth.STARTING and t.id not in
                  serving_new][:room]  # fmt: skip
    # Old tasks keep serving while the new ones cannot yet hold the minimum healthy count.
    healthy_old = [t.id for t in old if _serving(t) and t.unrouted_at is None]
    keep_old = healthy_old[: max(0, desired.min_healthy - len(serving_new))]
    route = set(serving_new) | set(keep_old)
    staying = route | set(coming_new)

    stop = tuple(t.id for t in tasks if t.id not in staying and _may_stop(t, route, desired, now))
    live_new = len(serving_new) + len(coming_new)
    live = sum(1 for t in tasks if t.health is not TaskHealth.EXITED)
    start = max(0, min(desired.replicas - live_new, desired.max_tasks - live))

    routed_now = {t.id for t in tasks if t.routed}
    new_route = None if route == routed_now else tuple(sorted(route))
    healthy_new = sum(1 for t in new if t.health is TaskHealth.HEALTHY)
    done = (
        healthy_new == desired.replicas
        and len(tasks) == desired.replicas
        and new_route is None
        and all(t.routed for t in tasks)
    )
    return Plan(
        start=start,
        route=new_route,
        stop=stop,
        remove=remove,
        failed=failed,
        outcome=Outcome.COMPLETED if done else Outcome.PROGRESS,
    )


def _may_stop(task: ObservedTask, route: set[str], desired: Desired, now: float) -> bool:
    """A leaving task stops once it is out of the route and its drain delay has passed."""
    if task.health in (TaskHealth.EXITED, TaskHealth.STOPPING) or task.id in route:
        return False
    if task.routed:
        return False  # this step takes it out of the route; the drain starts now
    if task.unrouted_at is None:
        return True  # it never served traffic
    return now - task.unrouted_at >= desired.drain_seconds


def _give_up(
    tasks: list[ObservedTask],
    old: list[ObservedTask],
    new: list[ObservedTask],
    remove: tuple[str, ...],
    failed: tuple[str, ...],
) -> Plan:
    """Circuit breaker: the old tasks keep serving; every new task leaves and stops."""
    route = tuple(sorted(t.id for t in old if t.health is TaskHealth.HEALTHY))
    routed_now = tuple(sorted(t.id for t in tasks if t.routed))
    return Plan(
        route=None if route == routed_now else route,
        stop=tuple(t.id for t in new if t.health not in (TaskHealth.EXITED, TaskHealth.STOPPING)),
        remove=remove,
        failed=failed,
        outcome=Outcome.FAILED,
    )
