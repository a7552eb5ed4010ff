"""The rollout planner, tested by plan equality: no engine, no router, no process."""

from __future__ import annotations

import pytest

from stackyard.deploy.plan import (
    Desired,
    ObservedTask,
    Outcome,
    Plan,
    TaskHealth,
    failure_threshold,
    plan_rollout,
)

H, S, U, X, STOP = (
    TaskHealth.HEALTHY,
    TaskHealth.STARTING,
    TaskHealth.UNHEALTHY,
    TaskHealth.EXITED,
    TaskHealth.STOPPING,
)


def task(
    id: str,
    release: int,
    health: TaskHealth,
    routed: bool = False,
    unrouted_at: float | None = None,
    stopped_by_us: bool = False,
) -> ObservedTask:
    return ObservedTask(id, release, health, routed, unrouted_at, stopped_by_us)


def plan(desired: Desired, *tasks: ObservedTask, failures: int = 0, now: float = 100.0,
         counted: frozenset[str] = frozenset()) -> Plan:  # fmt: skip
    return plan_rollout(desired, list(tasks), failures=failures, now=now, counted=counted)


V2 = Desired(release=2, replicas=1)
V2x2 = Desired(release=2, replicas=2)


def test_first_deployment_starts_the_desired_count() -> None:
    assert plan(V2x2) == Plan(start=2)


def test_a_starting_task_is_waited_for() -> None:
    assert plan(V2, task("n1", 2, S)) == Plan()


def test_a_healthy_new_task_joins_the_route_then_completes() -> None:
    assert plan(V2, task("n1", 2, H)) == Plan(route=("n1",))
    assert plan(V2, task("n1", 2, H, routed=True)) == Plan(outcome=Outcome.COMPLETED)


def test_rolling_update_starts_new_tasks_first_at_200_percent() -> None:
    old = (task("o1", 1, H, routed=True), task("o2", 1, H, routed=True))
    assert plan(V2x2, *old) == Plan(start=2)


def test_old_tasks_leave_the_route_only_as_new_ones_are_healthy() -> None:
    tasks = (
        task("o1", 1, H, routed=True),
        task("o2", 1, H, routed=True),
        task("n1", 2, H),
        task("n2", 2, S),
    )
    # One new task is healthy: it joins, one old task leaves; the other old one stays.
    assert plan(V2x2, *tasks) == Plan(route=("n1", "o1"))


def test_a_drained_task_stops_only_after_the_drain_delay() -> None:
    draining = task("o2", 1, H, unrouted_at=99.0)
    others = (task("o1", 1, H, routed=True), task("n1", 2, H, routed=True), task("n2", 2, S))
    assert plan(V2x2, *others, draining, now=100.0) == Plan()
    assert plan(V2x2, *others, draining, now=101.5) == Plan(stop=("o2",))


def test_stopped_tasks_are_removed_without_counting_as_failures() -> None:
    tasks = (task("n1", 2, H, routed=True), task("o1", 1, X, stopped_by_us=True))
    assert plan(V2, *tasks) == Plan(remove=("o1",))


def test_the_last_step_completes_the_deployment() -> None:
    tasks = (task("n1", 2, H, routed=True), task("n2", 2, H, routed=True))
    assert plan(V2x2, *tasks).outcome is Outcome.COMPLETED


def test_a_crashed_new_task_is_counted_removed_and_replaced() -> None:
    tasks = (task("o1", 1, H, routed=True), task("n1", 2, X))
    assert plan(V2, *tasks) == Plan(start=1, remove=("n1",), failed=("n1",))
    # Counted once: the next step, with n1 still listed, does not count it again.
    again = plan(V2, *tasks, failures=1, counted=frozenset({"n1"}))
    assert again.failed == ()


def test_an_unhealthy_new_task_is_stopped_and_counted() -> None:
    tasks = (task("o1", 1, H, routed=True), task("n1", 2, U))
    assert plan(V2, *tasks) == Plan(stop=("n1",), failed=("n1",))


def test_circuit_breaker_keeps_old_tasks_serving_and_stops_the_new() -> None:
    tasks = (task("o1", 1, H, routed=True), task("n3", 2, U), task("n4", 2, S))
    assert plan(V2, *tasks, failures=2) == Plan(
        stop=("n3", "n4"), failed=("n3",), outcome=Outcome.FAILED
    )


def test_circuit_breaker_takes_new_tasks_out_of_the_route() -> None:
    tasks = (task("o1", 1, H, routed=True), task("n1", 2, H, routed=True), task("n2", 2, X))
    result = plan(V2x2, *tasks, failures=2)
    assert result.outcome is Outcome.FAILED
    assert result.route == ("o1",)
    assert result.stop == ("n1",)


@pytest.mark.parametrize(
    ("replicas", "threshold"), [(1, 3), (2, 3), (6, 3), (7, 4), (10, 5), (1000, 200)]
)
def test_failure_threshold_is_half_the_desired_count_clamped(replicas: int, threshold: int) -> None:
    assert failure_threshold(replicas) == threshold


def test_self_healing_replaces_a_crashed_task_and_never_gives_up() -> None:
    heal = Desired(release=1, replicas=2, failure_threshold=None)
    tasks = (task("a", 1, H, routed=True), task("b", 1, X, routed=True))
    assert plan(heal, *tasks, failures=50) == Plan(
        start=1, route=("a",), remove=("b",), failed=("b",)
    )


def test_self_healing_unroutes_an_unhealthy_task_before_stopping_it() -> None:
    heal = Desired(release=1, replicas=1, failure_threshold=None)
    first = plan(heal, task("a", 1, U, routed=True))
    assert first == Plan(start=1, route=(), failed=("a",))
    later = plan(heal, task("a", 1, U, unrouted_at=90.0), task("b", 1, S), counted=frozenset({"a"}))
    assert later == Plan(stop=("a",))


def test_minimum_50_maximum_100_replaces_in_place() -> None:
    desired = Desired(release=2, replicas=2, minimum_healthy_percent=50, maximum_percent=100)
    old = (task("o1", 1, H, routed=True), task("o2", 1, H, routed=True))
    assert plan(desired, *old) == Plan(route=("o1",))
    after = (task("o1", 1, H, routed=True), task("o2", 1, X, stopped_by_us=True))
    assert plan(desired, *after) == Plan(start=1, remove=("o2",))


def test_scaling_down_drains_the_surplus() -> None:
    tasks = (task("n1", 2, H, routed=True), task("n2", 2, H, routed=True))
    assert plan(V2, *tasks) == Plan(route=("n1",))


def test_a_lost_route_is_rebuilt_from_healthy_tasks() -> None:
    # After a router restart nothing is routed; the healthy old task goes back at once.
    tasks = (task("o1", 1, H), task("n1", 2, S))
    assert plan(V2, *tasks) == Plan(route=("o1",))


def test_an_adopted_task_keeps_its_route_until_it_is_judged() -> None:
    # A control plane that just started has not probed the tasks the data plane serves:
    # they stay in the route, nothing starts or stops, and nothing completes yet.
    adopted = (task("n1", 2, S, routed=True), task("n2", 2, S, routed=True))
    assert plan(V2x2, *adopted) == Plan()
    old = (task("o1", 1, S, routed=True), task("o2", 1, S, routed=True))
    assert plan(V2x2, *old) == Plan(start=2)  # a deployment still starts its new tasks
    assert plan(V2x2, task("n1", 2, H, routed=True), task("n2", 2, S, routed=True)) == Plan()
    both = (task("n1", 2, H, routed=True), task("n2", 2, H, routed=True))
    assert plan(V2x2, *both) == Plan(outcome=Outcome.COMPLETED)


def test_an_adopted_task_that_fails_its_probe_leaves_the_route() -> None:
    tasks = (task("n1", 2, U, routed=True), task("n2", 2, S, routed=True))
    healing = Desired(release=2, replicas=2, failure_threshold=None)
    assert plan(healing, *tasks) == Plan(route=("n2",), start=1, failed=("n1",))


def test_a_stopping_task_is_waited_for() -> None:
    tasks = (task("n1", 2, H, routed=True), task("o1", 1, STOP, unrouted_at=1.0))
    assert plan(V2, *tasks) == Plan()
