"""Placement on an engine with nodes: which nodes may take a stage's tasks, the node of
each new task (``spread: node``), and ``decide`` choosing them or saying why it cannot.

Plain data only: nodes are ``NodeInfo`` values, the plans are compared whole.
"""

from __future__ import annotations

from collections import Counter
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
    TaskRecipe,
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
    NodeUse,
)
from stackyard.engines.fake import FakeSwarm

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
    chosen = choose_nodes(3, replicas=3, nodes=[N1, N2, N3], staying={}, use={"n1": NodeUse(5)})
    assert sorted(chosen) == ["n1", "n2", "n3"]
    assert chosen[-1] == "n1"  # the busiest node comes last
    assert choose_nodes(1, replicas=1, nodes=[N1, N2], staying={}, use={"n1": NodeUse(1)}) == (
        "n2",
    )


def test_tasks_of_other_platforms_count_as_load_and_spread_still_caps_the_stage() -> None:
    # n1 holds three services no platform of ours started (another platform's, anyone's).
    use = {"n1": NodeUse(3), "n2": NodeUse(1), "n3": NodeUse(0)}
    assert choose_nodes(1, replicas=1, nodes=[N1, N2, N3], staying={}, use=use) == ("n3",)
    # spread: node first: the stage's own tasks decide before the load does.
    chosen = choose_nodes(3, replicas=3, nodes=[N1, N2, N3], staying={}, use=use)
    assert chosen == ("n3", "n2", "n1")
    staying = {"n3": 1}
    assert choose_nodes(1, replicas=2, nodes=[N2, N3], staying=staying, use=use) == ("n2",)


def sized(number: int) -> NodeInfo:
    return replace(node(number), cpu=2.0, memory=1000)


def test_a_node_without_room_for_the_reservations_comes_after_those_with_room() -> None:
    full_cpu = {"n1": NodeUse(1, cpu=1.95), "n2": NodeUse(4, cpu=0.4), "n3": NodeUse(4, cpu=0.4)}
    full_memory = {"n1": NodeUse(1, memory=950), "n2": NodeUse(4, memory=100)}
    need = NodeUse(1, cpu=0.1, memory=100)
    nodes = [sized(1), sized(2)]
    for use in (full_cpu, full_memory):
        assert choose_nodes(1, replicas=1, nodes=nodes, staying={}, use=use, need=need) == ("n2",)
    # Each task chosen counts at once: the second does not fit n2 after the first.
    tight = {"n1": NodeUse(0, cpu=1.5), "n2": NodeUse(5, cpu=1.5)}
    big = NodeUse(1, cpu=0.5)
    staying = {"n2": 1}
    assert choose_nodes(2, replicas=4, nodes=nodes, staying=staying, use=tight, need=big) == (
        "n1",
        "n2",
    )
    # Where no node has room, Swarm decides when room comes: the least loaded still first.
    nowhere = {"n1": NodeUse(2, cpu=2.0), "n2": NodeUse(1, cpu=2.0)}
    assert choose_nodes(1, replicas=1, nodes=nodes, staying={}, use=nowhere, need=need) == ("n2",)


def test_among_nodes_with_as_many_tasks_the_smaller_reserved_share_comes_first() -> None:
    use = {"n1": NodeUse(2, cpu=1.0, memory=100), "n2": NodeUse(2, cpu=0.2, memory=600)}
    nodes = [sized(1), sized(2), sized(3)]
    assert choose_nodes(1, replicas=1, nodes=nodes[:2], staying={}, use=use) == ("n1",)
    use["n3"] = NodeUse(2, cpu=0.2, memory=200)
    assert choose_nodes(1, replicas=1, nodes=nodes, staying={}, use=use) == ("n3",)


def test_spread_caps_each_node_at_ceil_replicas_over_nodes_counting_the_tasks_that_stay() -> None:
    chosen = choose_nodes(2, replicas=4, nodes=[N1, N2, N3], staying={"n1": 2}, use={})
    assert sorted(chosen) == ["n2", "n3"]


def test_a_node_where_a_task_just_failed_comes_last() -> None:
    chosen = choose_nodes(1, replicas=2, nodes=[N1, N2], staying={}, use={}, avoid={"n1"})
    assert chosen == ("n2",)


def test_spread_none_or_no_node_leaves_the_choice_to_the_engine() -> None:
    assert choose_nodes(2, replicas=2, nodes=[N1], staying={}, use={}, spread="none") == (
        None,
        None,
    )
    assert choose_nodes(1, replicas=1, nodes=[], staying={}, use={}) == (None,)


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
        node_use=tuple(
            (n, NodeUse(c)) for n, c in Counter(t.node for t in tasks if t.running).items()
        ),
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


def test_decide_with_constraints_no_node_satisfies_starts_nothing_and_fails_at_once() -> None:
    settings = StageSettings(replicas=1, constraints=("node.labels.zone == mars",))
    plan = decide(settled_view(nodes=(N1, N2), settings=settings))
    assert plan.start is None
    assert plan.blocked == Blocked(
        no_node_reason("shop/dev", settings.constraints, (N1, N2)),
        "the constraints hold for no node of the cluster: label a node so that they do "
        "(docker node update --label-add), or change placement in stackyard.yml; then "
        "deploy again",
        permanent=True,  # waiting would not help: the deployment fails now, saying why
    )


def test_decide_waits_while_the_only_node_that_fits_is_down_paused_or_drained() -> None:
    settings = StageSettings(replicas=1, constraints=("node.labels.zone == mars",))
    for away in (
        node(3, state=NodeState.DOWN, zone="mars"),
        node(3, availability=Availability.PAUSE, zone="mars"),
        node(3, **{"zone": "mars", NODE_LABEL_DRAINING: "1"}),
    ):
        plan = decide(settled_view(nodes=(N1, N2, away), settings=settings))
        assert plan.start is None
        assert plan.blocked is not None
        assert not plan.blocked.permanent  # it may come back: retried, within the budget
        assert "start or activate it (stackyard nodes activate)" in (plan.blocked.hint or "")


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


def test_decide_places_a_new_task_away_from_a_node_another_platforms_service_holds() -> None:
    swarm = FakeSwarm()
    swarm.occupy("node-1", tasks=1, cpu=0.25)  # another platform's service pinned there
    swarm.occupy("node-3", tasks=1, cpu=0.5)  # and one on node-3 reserving more
    nodes = tuple(swarm.nodes())
    view = settled_view(nodes=nodes, settings=StageSettings(replicas=1))
    plan = decide(replace(view, node_use=tuple(swarm.node_use().items())))
    assert plan.start == StartTasks(1, failures_count=False, nodes=("node-2",))
    swarm.occupy("node-2", tasks=1)  # now each holds one: the smallest reservation wins
    plan = decide(replace(view, node_use=tuple(swarm.node_use().items())))
    assert plan.start == StartTasks(1, failures_count=False, nodes=("node-2",))
    # node-2 reserves 1.6 of its 2 cores: the stage's task (0.5 cores) fits elsewhere only,
    # though the others hold more tasks.
    swarm.occupy("node-2", tasks=0, cpu=1.6)
    swarm.occupy("node-1", tasks=2)
    swarm.occupy("node-3", tasks=2)
    recipe = TaskRecipe(release=1, digest=R1.digest, deployment=0, cpu=0.5)
    assert view.target is not None
    with_recipe = replace(view, target=replace(view.target, recipe=recipe))
    plan = decide(replace(with_recipe, node_use=tuple(swarm.node_use().items())))
    assert plan.start == StartTasks(1, failures_count=False, nodes=("node-1",))
    plan = decide(replace(view, node_use=tuple(swarm.node_use().items())))  # reserves nothing
    assert plan.start == StartTasks(1, failures_count=False, nodes=("node-2",))
