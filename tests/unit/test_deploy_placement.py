"""Placement on an engine with nodes: which nodes may take a stage's tasks, the node of
each new task (``spread: node``), and ``decide`` choosing them or saying why it cannot.

Plain data only: nodes are ``NodeInfo`` values, the plans are compared whole.
"""

from __future__ import annotations

from dataclasses import replace

from stackyard.deploy.decide import (
    Blocked,
    RouteFacts,
    StageMemory,
    StageSettings,
    StageView,
    StartTasks,
    Target,
    TaskFacts,
    decide,
)
from stackyard.deploy.decide import ReleaseFacts as Release
from stackyard.deploy.placement import choose_nodes, eligible, no_node_reason
from stackyard.deploy.plan import TaskHealth
from stackyard.engines.base import (
    NODE_LABEL_DRAINING,
    Availability,
    NodeInfo,
    NodeState,
)

R1 = Release(1, "sha256:" + "1" * 64, "{}")
R2 = Release(2, "sha256:" + "2" * 64, "{}")


def node(
    number: int,
    *,
    state: NodeState = NodeState.READY,
    availability: Availability = Availability.ACTIVE,
    **labels: str,
) -> NodeInfo:
    return NodeInfo(
        id=f"n{number}",
        name=f"host{number}",
        address=f"127.0.0.{number + 1}",
        address_from="label",
        role="manager" if number == 1 else "worker",
        state=state,
        availability=availability,
        labels=labels,
    )


N1, N2, N3 = node(1), node(2), node(3)


def test_eligible_nodes_are_ready_active_not_draining_and_satisfy_every_constraint() -> None:
    down = node(4, state=NodeState.DOWN)
    paused = node(5, availability=Availability.PAUSE)
    draining = node(6, **{NODE_LABEL_DRAINING: "1"})
    zone_a = node(7, zone="a")
    nodes = [N1, N2, down, paused, draining, zone_a]
    assert eligible(nodes, ()) == [N1, N2, zone_a]
    assert eligible(nodes, ("node.labels.zone == a",)) == [zone_a]
    assert eligible(nodes, ("node.labels.zone != a", "node.role == worker")) == [N2]


def test_spread_puts_one_task_on_each_node_then_the_least_loaded_first() -> None:
    chosen = choose_nodes(3, replicas=3, nodes=[N1, N2, N3], staying={}, load={"n1": 5})
    assert sorted(chosen) == ["n1", "n2", "n3"]
    assert chosen[-1] == "n1"  # the busiest node comes last
    assert choose_nodes(1, replicas=1, nodes=[N1, N2], staying={}, load={"n1": 1}) == ("n2",)


def test_spread_caps_each_node_at_ceil_replicas_over_nodes_counting_the_tasks_that_stay() -> None:
    chosen = choose_nodes(2, replicas=4, nodes=[N1, N2, N3], staying={"n1": 2}, load={})
    assert sorted(chosen) == ["n2", "n3"]


def test_a_node_where_a_task_just_failed_comes_last() -> None:
    chosen = choose_nodes(1, replicas=2, nodes=[N1, N2], staying={}, load={}, avoid={"n1"})
    assert chosen == ("n2",)


def test_spread_none_or_no_node_leaves_the_choice_to_the_engine() -> None:
    assert choose_nodes(2, replicas=2, nodes=[N1], staying={}, load={}, spread="none") == (
        None,
        None,
    )
    assert choose_nodes(1, replicas=1, nodes=[], staying={}, load={}) == (None,)


def test_the_reason_no_node_fits_names_the_constraints_and_each_node() -> None:
    reason = no_node_reason(
        "shop/prod", ("node.labels.zone == mars",), [N1, node(2, state=NodeState.DOWN)]
    )
    assert reason == (
        "stage shop/prod: no node can take its tasks (placement: node.labels.zone == mars); "
        "nodes: host1 (127.0.0.2: ready, active), host2 (127.0.0.3: down, active)"
    )


def facts(id: str, release: Release, node_id: str, health: TaskHealth) -> TaskFacts:
    number = int(node_id[1:])
    return TaskFacts(
        id=id,
        name=f"sy-shop-dev-r{release.number}-{id}",
        release=release.number,
        digest=release.digest,
        address=f"127.0.0.{number + 1}:20001",
        running=health is not TaskHealth.EXITED,
        exit_code=None,
        health=health,
        node=node_id,
    )


def settled_view(
    *tasks: TaskFacts, nodes: tuple[NodeInfo, ...], settings: StageSettings
) -> StageView:
    """A stage with no deployment, its route serving every running task."""
    upstreams = tuple(t.address for t in tasks if t.running)
    route = RouteFacts("shop-dev", stored_port=8001, stored_host=None, has_row=True,
                       upstreams=upstreams)  # fmt: skip
    return StageView(
        stack="shop",
        stage="dev",
        now=100.0,
        memory=StageMemory(),
        target=Target(R1, route, settings),
        last_completed=R1,
        tasks=tasks,
        nodes=nodes,
        node_load=tuple((t.node, 1) for t in tasks if t.running),
    )


def test_decide_replaces_a_task_lost_with_its_node_on_a_node_that_holds_none() -> None:
    lost = facts("a", R1, "n1", TaskHealth.EXITED)
    kept = facts("b", R1, "n2", TaskHealth.HEALTHY)
    down = node(1, state=NodeState.DOWN)
    plan = decide(
        settled_view(lost, kept, nodes=(down, N2, N3), settings=StageSettings(replicas=2))
    )
    assert plan.start == StartTasks(1, failures_count=False, nodes=("n3",))
    assert plan.blocked is None


def test_decide_moves_a_task_off_a_draining_node_before_stopping_it() -> None:
    draining = node(1, **{NODE_LABEL_DRAINING: "1"})
    on_drained = facts("a", R1, "n1", TaskHealth.HEALTHY)
    kept = facts("b", R1, "n2", TaskHealth.HEALTHY)
    plan = decide(
        settled_view(on_drained, kept, nodes=(draining, N2, N3), settings=StageSettings(replicas=2))
    )
    assert plan.start == StartTasks(1, failures_count=False, nodes=("n3",))
    assert plan.stop == ()  # the old task serves until its replacement does


def test_decide_with_no_node_that_fits_starts_nothing_and_says_why() -> None:
    settings = StageSettings(replicas=1, constraints=("node.labels.zone == mars",))
    plan = decide(settled_view(nodes=(N1, N2), settings=settings))
    assert plan.start is None
    assert plan.blocked == Blocked(
        no_node_reason("shop/dev", settings.constraints, (N1, N2)),
        "label a node so that the constraints hold (docker node update --label-add), "
        "activate one (stackyard nodes activate), or change placement in stackyard.yml",
        permanent=False,
    )


def test_a_routed_address_no_task_has_any_more_leaves_the_route() -> None:
    moved = facts("a", R1, "n3", TaskHealth.STARTING)  # rescheduled from n2: a new address
    view = settled_view(moved, nodes=(N1, N2, N3), settings=StageSettings(replicas=1))
    stale_route = RouteFacts("shop-dev", stored_port=8001, stored_host=None, has_row=True,
                             upstreams=("127.0.0.3:20001",))  # fmt: skip
    assert view.target is not None
    plan = decide(replace(view, target=Target(R1, stale_route, view.target.settings)))
    assert plan.route is not None
    # It rejoins only once healthy on its new node.
    assert (plan.route.task_ids, plan.route.addresses) == ((), ())
