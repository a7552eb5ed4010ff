"""``decide``: a stage's whole next step from one observation, tested by plan equality.

No engine, no router, no store, no thread: each test builds a ``StageView`` and compares
the ``StagePlan`` with the one expected. The rollout arithmetic inside has its own tests
(test_deploy_plan.py); these cover the choices around it.
"""

from __future__ import annotations

from dataclasses import replace

from stackyard.deploy.decide import (
    Blocked,
    DeploymentFacts,
    DeploymentStatus,
    DeploymentUpdate,
    Finish,
    ReleaseFacts,
    Rollback,
    RouteChange,
    RouteFacts,
    RouteRow,
    StageMemory,
    StagePlan,
    StageSettings,
    StageView,
    StartTasks,
    StopTask,
    Target,
    TaskFacts,
    decide,
    rollback_choice,
)
from stackyard.deploy.plan import TaskHealth
from stackyard.router.base import Route

V1 = "sha256:" + "1" * 64
V2 = "sha256:" + "2" * 64
CONFIG_A = '{"variables":{"GREETING":"hi"}}'
CONFIG_B = '{"variables":{"GREETING":"hello"}}'
R1 = ReleaseFacts(1, V1, CONFIG_A)
R2 = ReleaseFacts(2, V2, CONFIG_A)
ROUTE = "shop-dev"
ONE = StageSettings(replicas=1, drain_seconds=2, stop_timeout=3)
H, S, U, X = TaskHealth.HEALTHY, TaskHealth.STARTING, TaskHealth.UNHEALTHY, TaskHealth.EXITED


def served(*addresses: str, port: int = 8001) -> RouteFacts:
    """The stage's route on ``port``, stored and served with these upstreams."""
    return RouteFacts(ROUTE, stored_port=port, stored_host=None, has_row=True, upstreams=addresses)


def task(
    id: str,
    release: int,
    health: TaskHealth,
    *,
    digest: str = V1,
    port: int = 20001,
    exit_code: int | None = None,
    **facts: object,
) -> TaskFacts:
    return TaskFacts(
        id=id,
        name=f"sy-shop-dev-r{release}-{id}",
        release=release,
        digest=digest,
        address=f"127.0.0.1:{port}",
        running=health is not X,
        exit_code=exit_code,
        health=health,
        **facts,  # type: ignore[arg-type]
    )


def deployment(number: int = 2, release: ReleaseFacts = R2, **facts: object) -> DeploymentFacts:
    defaults: dict[str, object] = {
        "id": 10 + number,
        "number": number,
        "release": release.number,
        "digest": release.digest,
        "status": DeploymentStatus.IN_PROGRESS,
        "desired": 1,
        "trigger": "test",
        "failures": 0,
        "reason": "",
        "log_path": f"/logs/{number}.log",
    }
    return DeploymentFacts(**{**defaults, **facts})  # type: ignore[arg-type]


def view(
    release: ReleaseFacts,
    *tasks: TaskFacts,
    route: RouteFacts | None = None,
    settings: StageSettings = ONE,
    active: DeploymentFacts | None = None,
    begun: bool = True,
    completed: ReleaseFacts | None = R1,
    releases: tuple[ReleaseFacts, ...] = (),
    memory: StageMemory | None = None,
) -> StageView:
    """A stage driven to ``release``; ``begun``: the loop already drives ``active``."""
    if memory is None:
        memory = StageMemory(deployment=active.id if active and begun else None)
    return StageView(
        stack="shop",
        stage="dev",
        now=100.0,
        memory=memory,
        target=Target(release, route or served(), settings),
        deployment=active,
        last_completed=completed,
        releases=releases,
        tasks=tasks,
    )


def route_to(*ids_ports: tuple[str, int], create: bool = False, port: int = 8001,
             leaving: tuple[str, ...] = ()) -> RouteChange:  # fmt: skip
    return RouteChange(
        route=Route(ROUTE, port=port),
        create=create,
        task_ids=tuple(i for i, _ in ids_ports),
        addresses=tuple(f"127.0.0.1:{p}" for _, p in ids_ports),
        leaving=leaving,
    )


# -- rollback: where to, or why not


def test_the_circuit_breaker_rolls_back_to_the_last_completed_release() -> None:
    old = task("o1", 1, H, port=20001)
    crashed = task("n3", 2, X, digest=V2, port=20003, exit_code=3, last_lines=("boom",))
    active = deployment(failures=2, reason="task n2 exited with status 3")
    plan = decide(view(R2, old, crashed, route=served("127.0.0.1:20001"), active=active))
    reason = "task sy-shop-dev-r2-n3 exited with status 3; last log lines: boom"
    failed = f"3 new task(s) failed (circuit breaker at 3); {reason}"
    assert plan == StagePlan(
        counted=frozenset({"n3"}),
        failed=("n3",),
        lines=(reason,),
        remove=("n3",),
        deployment=DeploymentUpdate(
            id=active.id,
            failures=1,
            reason=reason,
            finish=Finish(DeploymentStatus.FAILED, failed),
        ),
        closing_lines=(f"deployment FAILED: {failed}",),
        rollback=Rollback(1, V1, "rollback: deployment 2 failed"),
        busy=True,
    )


def test_a_failed_copy_of_the_last_completed_release_is_not_rolled_back_again() -> None:
    copy = ReleaseFacts(3, V1, CONFIG_A)  # a rollback release: release 1's digest and config
    active = deployment(3, copy, failures=3, reason="task n exited with status 1")
    plan = decide(view(copy, route=served(), active=active, completed=R1))
    assert plan.rollback is None
    assert plan.closing_lines == (
        "deployment FAILED: 3 new task(s) failed (circuit breaker at 3); "
        "task n exited with status 1",
        "not rolling back: release 1, the last COMPLETED one, has the image and config "
        "that just failed",
    )


def test_a_failed_first_deployment_has_nothing_to_go_back_to() -> None:
    plan = decide(view(R1, route=served(), active=deployment(1, R1, failures=3), completed=None))
    assert plan.rollback is None
    assert plan.closing_lines[-1] == "no earlier COMPLETED release to go back to"


def test_rollback_choice_compares_digest_and_config() -> None:
    assert rollback_choice(R1, R2, 4) == Rollback(1, V1, "rollback: deployment 4 failed")
    same_digest = ReleaseFacts(5, V1, CONFIG_B)  # only the config differs: a real change
    assert rollback_choice(R1, same_digest, 6) == Rollback(1, V1, "rollback: deployment 6 failed")
    assert isinstance(rollback_choice(R1, ReleaseFacts(7, V1, CONFIG_A), 8), str)
    assert rollback_choice(None, R2, 2) == "no earlier COMPLETED release to go back to"


# -- heal or fail


def test_a_task_that_dies_in_a_deployment_counts_against_it() -> None:
    died = task("n1", 2, X, digest=V2, port=20002, exit_code=137, health_output="HTTP 500")
    active = deployment()
    plan = decide(view(R2, task("o1", 1, H, port=20001), died,
                       route=served("127.0.0.1:20001"), active=active))  # fmt: skip
    reason = "task sy-shop-dev-r2-n1 exited with status 137; last health check: HTTP 500"
    assert plan == StagePlan(
        counted=frozenset({"n1"}),
        failed=("n1",),
        lines=(reason,),
        remove=("n1",),
        start=StartTasks(1, failures_count=True),
        deployment=DeploymentUpdate(id=active.id, failures=1, reason=reason),
        busy=True,
    )


def test_a_task_that_dies_outside_a_deployment_is_healed_with_an_event() -> None:
    died = task("a", 1, X, port=20002, exit_code=137, last_lines=("out of memory",))
    plan = decide(view(R1, task("b", 1, H, port=20001), died, settings=replace(ONE, replicas=2),
                       route=served("127.0.0.1:20001", "127.0.0.1:20002")))  # fmt: skip
    reason = "task sy-shop-dev-r1-a exited with status 137; last log lines: out of memory"
    assert plan == StagePlan(
        counted=frozenset({"a"}),
        failed=("a",),
        lines=(reason,),
        events=(f"{reason}; replacing it",),
        route=route_to(("b", 20001), leaving=("a",)),
        remove=("a",),
        start=StartTasks(1, failures_count=False),
        busy=True,
    )


def test_a_task_already_counted_is_not_counted_again() -> None:
    died = task("n1", 2, X, digest=V2, port=20002, exit_code=1)
    memory = StageMemory(deployment=12, counted=frozenset({"n1"}))
    plan = decide(view(R2, task("o1", 1, H), died, route=served("127.0.0.1:20001"),
                       active=deployment(failures=1), memory=memory))  # fmt: skip
    assert plan.failed == ()
    assert plan.deployment == DeploymentUpdate(id=12)
    assert plan.counted == frozenset({"n1"})


# -- adoption after a restart


def test_a_restarted_loop_adopts_the_deployment_and_counts_its_failed_tasks_once() -> None:
    # An earlier control plane counted n1 and n2, and stopped them; this one remembers nothing.
    active = deployment(failures=2, status=DeploymentStatus.IN_PROGRESS)
    tasks = (
        task("o1", 1, H, port=20001),
        task("n1", 2, X, digest=V2, port=20002, exit_code=143),
        task("n2", 2, U, digest=V2, port=20003),
    )
    plan = decide(view(R2, *tasks, route=served("127.0.0.1:20001"), active=active, begun=False))
    assert plan == StagePlan(
        begin=active,
        counted=frozenset({"n1", "n2"}),
        lines=("deployment 2: release 2 (" + V2 + "), 1 task(s), trigger test",),
        stop=(StopTask("n2", "sy-shop-dev-r2-n2", 3),),
        remove=("n1",),  # no start yet: with n2 still running, 200% are running
        deployment=DeploymentUpdate(id=active.id, tasks_stopped=1),
        busy=True,
    )


def test_a_queued_deployment_without_failures_begins_with_nothing_counted() -> None:
    active = deployment(status=DeploymentStatus.QUEUED)
    memory = StageMemory(deployment=5, counted=frozenset({"old"}))  # an earlier deployment's
    plan = decide(view(R2, task("o1", 1, H), route=served("127.0.0.1:20001"),
                       active=active, memory=memory))  # fmt: skip
    assert plan.begin == active
    assert plan.counted == frozenset()
    assert plan.start == StartTasks(1, failures_count=True)


# -- the equivalent release


def test_a_task_with_the_targets_digest_and_config_counts_as_the_target() -> None:
    copy = ReleaseFacts(3, V1, CONFIG_A)  # same digest and config as release 1
    running = task("o1", 1, H)
    active = deployment(3, copy)
    plan = decide(view(copy, running, route=served("127.0.0.1:20001"), active=active,
                       releases=(R1,)))  # fmt: skip
    assert plan == StagePlan(
        deployment=DeploymentUpdate(
            id=active.id, tasks_healthy=1, tasks_routed=1, finish=Finish(DeploymentStatus.COMPLETED)
        ),
        closing_lines=("deployment COMPLETED",),
        busy=True,
    )


def test_a_task_with_the_same_digest_but_another_config_is_replaced() -> None:
    changed = ReleaseFacts(3, V1, CONFIG_B)
    plan = decide(view(changed, task("o1", 1, H), route=served("127.0.0.1:20001"),
                       active=deployment(3, changed), releases=(R1,)))  # fmt: skip
    assert plan.start == StartTasks(1, failures_count=True)
    assert plan.deployment is not None
    assert plan.deployment.finish is None


# -- the route


def test_a_route_port_taken_by_another_process_moves_to_a_free_one() -> None:
    lost = RouteFacts(ROUTE, 8001, None, has_row=True, upstreams=None, port_free=False,
                      spare_port=8002)  # fmt: skip
    plan = decide(view(R1, task("a", 1, H, port=20001), route=lost))
    assert plan == StagePlan(
        lines=("port 8001 was taken by another process; serving on 8002",),
        route_row=RouteRow(8002, None),
        route=route_to(("a", 20001), create=True, port=8002),
        busy=True,
    )


def test_a_port_the_stage_chose_that_is_taken_fails_the_deployment_at_once() -> None:
    taken = RouteFacts(ROUTE, 8001, None, has_row=True, upstreams=None, port_free=False)
    active = deployment(1, R1, status=DeploymentStatus.QUEUED)
    plan = decide(view(R1, route=taken, settings=replace(ONE, port=8001), active=active,
                       begun=False, completed=None))  # fmt: skip
    blocked = Blocked(
        "stage shop/dev: port 127.0.0.1:8001 is in use by another process",
        "stop that process, or set another `port:` for the stage in stackyard.yml",
    )
    reason = f"{blocked.message} ({blocked.hint})"
    assert plan == StagePlan(
        begin=active,
        lines=("deployment 1: release 1 (" + V1 + "), 1 task(s), trigger test",),
        deployment=DeploymentUpdate(id=active.id, finish=Finish(DeploymentStatus.FAILED, reason)),
        closing_lines=(f"deployment FAILED: {reason}",),
        blocked=blocked,
    )


def test_a_first_route_gets_the_spare_port_and_is_created_empty() -> None:
    new = RouteFacts(ROUTE, None, None, has_row=False, upstreams=None, spare_port=8005)
    active = deployment(1, R1, status=DeploymentStatus.QUEUED)
    plan = decide(view(R1, route=new, active=active, begun=False, completed=None))
    assert plan.route_row == RouteRow(8005, None)
    assert plan.route == route_to(create=True, port=8005)
    assert plan.start == StartTasks(1, failures_count=True)


def test_a_host_in_stackyard_yml_moves_the_route_to_the_host() -> None:
    settings = replace(ONE, host="shop.test")
    plan = decide(view(R1, task("a", 1, H), route=served("127.0.0.1:20001"), settings=settings))
    assert plan.route_row == RouteRow(None, "shop.test")


def test_new_names_or_tls_give_a_served_route_to_the_router_again() -> None:
    on_host = RouteFacts(ROUTE, None, "shop.test", has_row=True, upstreams=("127.0.0.1:20001",))
    settings = replace(ONE, host="shop.test", aliases=("www.shop.test",), tls="acme")
    plan = decide(view(R1, task("a", 20001, H), route=on_host, settings=settings))
    assert plan.route_row == RouteRow(None, "shop.test", ("www.shop.test",), "acme")
    wanted = Route(ROUTE, host="shop.test", aliases=("www.shop.test",), tls="acme")
    assert plan.route == RouteChange(wanted, True, ("a",), ("127.0.0.1:20001",))

    stored = replace(on_host, stored_aliases=("www.shop.test",), stored_tls="acme")
    again = decide(view(R1, task("a", 20001, H), route=stored, settings=settings))
    assert (again.route_row, again.route) == (None, None)


# -- when the stage cannot be seen, or has nothing to run


def test_an_engine_or_router_that_does_not_answer_still_begins_the_deployment() -> None:
    active = deployment(status=DeploymentStatus.QUEUED)
    blind = Blocked("the fake router does not answer", permanent=False)
    seen = StageView("shop", "dev", 100.0, StageMemory(), deployment=active, blind=blind)
    assert decide(seen) == StagePlan(
        begin=active,
        lines=("deployment 2: release 2 (" + V2 + "), 1 task(s), trigger test",),
        blocked=blind,
    )


def test_a_stage_with_nothing_to_run_stops_and_removes_its_tasks() -> None:
    memory = StageMemory(stopping=frozenset({"b"}))
    tasks = (task("a", 1, H), task("b", 1, H), task("c", 1, X, exit_code=0))
    plan = decide(StageView("shop", "dev", 100.0, memory, tasks=tasks))
    assert plan == StagePlan(
        stop=(StopTask("a", "sy-shop-dev-r1-a", 10.0),), remove=("c",), busy=True
    )


def test_a_settled_stage_waits_for_the_drain_under_way_then_nothing() -> None:
    memory = StageMemory(unrouted_at=(("b", 99.5),))
    stage = view(R1, task("a", 1, H, port=20001), task("b", 1, H, port=20002),
                 route=served("127.0.0.1:20001"), memory=memory)  # fmt: skip
    plan = decide(replace(stage, target=replace(stage.target, settings=replace(ONE, replicas=1))))
    assert plan == StagePlan(busy=False, wait=1.5)
    settled = decide(view(R1, task("a", 1, H, port=20001), route=served("127.0.0.1:20001")))
    assert settled == StagePlan()
