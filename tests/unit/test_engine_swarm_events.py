"""The swarm engine's event translation: two listings of a service's one task, before and
after, become the task events in the order they happened (``_kinds``). Plain tuples:
(task id, Swarm state, node, "ran" when a container ran, replicas[, Swarm's error])."""

from __future__ import annotations

from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_STACK,
    LABEL_STAGE,
    Availability,
    NodeInfo,
    NodeState,
    NodeUse,
    TaskEventKind,
    TaskState,
)
from stackyard.engines.swarm import (
    _current_tasks,
    _kinds,
    _moved,
    _node_use,
    _task_info,
    docker_nanos,
)

CREATED, STARTED, EXITED, REMOVED = (
    TaskEventKind.CREATED,
    TaskEventKind.STARTED,
    TaskEventKind.EXITED,
    TaskEventKind.REMOVED,
)
PENDING = ("t1", "pending", "", "", "1")
RUNNING = ("t1", "running", "n1", "ran", "1")
SHUTDOWN = ("t1", "shutdown", "n1", "ran", "0")
REAPED = ("", "", "", "", "0")
ACTIVE = Availability.ACTIVE


def test_one_listing_that_sees_several_steps_reports_each_in_order() -> None:
    assert _kinds(None, RUNNING) == [CREATED, STARTED]
    assert _kinds(PENDING, SHUTDOWN) == [STARTED, EXITED]


def test_a_task_moving_through_swarms_pending_states_is_created_once() -> None:
    """A service listed before Swarm made its task, then its task new, pending, assigned:
    one CREATED (the contract's lifecycle), not one per listing."""
    no_task_yet = ("", "", "", "", "1")
    assert _kinds(None, no_task_yet) == [CREATED]
    assert _kinds(no_task_yet, PENDING) == []
    assert _kinds(PENDING, ("t1", "assigned", "n1", "", "1")) == []
    assert _kinds(("t1", "assigned", "n1", "", "1"), RUNNING) == [STARTED]


def test_a_task_that_never_ran_exits_without_starting() -> None:
    assert _kinds(PENDING, ("t1", "rejected", "n1", "", "1")) == [EXITED]


def test_swarm_reaping_an_ended_task_is_no_new_event() -> None:
    assert _kinds(SHUTDOWN, REAPED) == []


def test_a_task_rescheduled_onto_another_node_starts_again() -> None:
    assert _kinds(RUNNING, ("t2", "running", "n2", "ran", "1")) == [STARTED]


def test_a_removed_service_that_ran_exits_then_is_removed() -> None:
    assert _kinds(RUNNING, None) == [EXITED, REMOVED]
    assert _kinds(REAPED, None) == [REMOVED]


def swarm_task(task_id: str, state: str, desired: str, created: str) -> dict[str, object]:
    return {
        "ID": task_id,
        "ServiceID": "s1",
        "Status": {"State": state},
        "DesiredState": desired,
        "CreatedAt": created,
    }


def test_a_task_swarm_moves_start_first_stays_the_running_one_until_the_new_one_runs() -> None:
    old = swarm_task("t1", "running", "running", "2026-01-01T00:00:01Z")
    placing = swarm_task("t2", "pending", "running", "2026-01-01T00:00:09Z")
    assert _current_tasks([old, placing])["s1"]["ID"] == "t1"
    started = swarm_task("t2", "running", "running", "2026-01-01T00:00:09Z")
    leaving = swarm_task("t1", "running", "shutdown", "2026-01-01T00:00:01Z")
    assert _current_tasks([leaving, started])["s1"]["ID"] == "t2"


def test_a_new_task_with_none_running_is_the_current_one() -> None:
    ended = swarm_task("t1", "shutdown", "shutdown", "2026-01-01T00:00:01Z")
    placing = swarm_task("t2", "pending", "running", "2026-01-01T00:00:09Z")
    assert _current_tasks([ended, placing])["s1"]["ID"] == "t2"


def test_tasks_created_in_the_same_second_are_ordered_by_their_time_not_its_text() -> None:
    # Docker writes times as Go's RFC 3339 with nanoseconds, trailing zeros trimmed: as
    # strings, "05.1Z" sorts after "05.15Z" and "05Z" after "05.5Z".
    for older, newer in [
        ("2026-01-01T00:00:05.1Z", "2026-01-01T00:00:05.15Z"),
        ("2026-01-01T00:00:05Z", "2026-01-01T00:00:05.5Z"),
        ("2026-01-01T00:00:05.09Z", "2026-01-01T00:00:05.1Z"),
        ("2026-01-01T00:00:05.123456789Z", "2026-01-01T00:00:05.12345679Z"),  # beyond µs
        ("2026-01-01T01:00:05.2+01:00", "2026-01-01T00:00:05.3Z"),
    ]:
        ended = swarm_task("t1", "shutdown", "shutdown", older)
        placing = swarm_task("t2", "pending", "running", newer)
        for listed in ([ended, placing], [placing, ended]):
            assert _current_tasks(listed)["s1"]["ID"] == "t2", (older, newer)


def test_docker_times_are_read_to_the_nanosecond() -> None:
    assert docker_nanos("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert docker_nanos("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert docker_nanos("1970-01-01T01:00:00+01:00") == 0
    assert docker_nanos("0001-01-01T00:00:00Z") is not None  # Docker's zero time: the oldest
    assert [
        docker_nanos(v) for v in ("", None, "yesterday", "2026-01-01T00:00:05.1234567891Z")
    ] == [None] * 4


def service(replicas: int = 1) -> dict[str, object]:
    return {"ID": "s1", "Spec": {"Name": "t", "Mode": {"Replicated": {"Replicas": replicas}}}}


def test_a_task_swarm_moves_stop_first_is_moving_until_it_runs_again() -> None:
    """Stop-first (Swarm's default update order): the old task is told to shut down and the
    new one is on its way. The task is MOVING (not ended: the stage waits for it), and a
    service's first task on its way is only CREATED."""
    leaving = swarm_task("t1", "running", "shutdown", "2026-01-01T00:00:01Z")
    placing = swarm_task("t2", "assigned", "running", "2026-01-01T00:00:09Z")
    listed = [leaving, placing]
    assert _moved(listed) == {"s1"}
    current = _current_tasks(listed)["s1"]
    assert _task_info(service(), current, {}, moved=True).state is TaskState.MOVING
    assert _task_info(service(), current, {}, moved=False).state is TaskState.CREATED
    assert _moved([placing]) == set()
    running = swarm_task("t2", "running", "running", "2026-01-01T00:00:09Z")
    assert _task_info(service(), running, {}, moved=True).state is TaskState.RUNNING
    failed = {**placing, "Status": {"State": "rejected", "Err": "port taken"}}
    assert _task_info(service(), failed, {}, moved=True).state is TaskState.EXITED


RUNNING_T2 = {**swarm_task("t2", "running", "running", "2026-01-01T00:00:09Z"), "NodeID": "n1"}


def pinned_service() -> dict[str, object]:
    template = {"Placement": {"Constraints": ["node.id == n1", "node.labels.zone==mars"]}}
    spec = {"Name": "t", "Labels": {"dev.stackyard.port": "20001"}, "TaskTemplate": template}
    return {"ID": "s1", "Spec": {**spec, "Mode": {"Replicated": {"Replicas": 1}}}}


def test_a_move_no_node_can_take_is_moving_saying_what_it_waits_for_and_answers_nowhere() -> None:
    """An operator's move (`docker service update --constraint-add`) that no node meets:
    Swarm keeps the new task pending with its reason. The task waits (the move can be
    undone), answering nowhere meanwhile, though its pinned node's address is the old one.
    A service's first task that no node can take is a failed start, as before."""
    err = "no suitable node (scheduling constraints not satisfied on 3 nodes)"
    placing = {**swarm_task("t2", "pending", "running", "2026-01-01T00:00:09Z")}
    placing["Status"] = {"State": "pending", "Err": err}
    node = NodeInfo("n1", "vm", "127.0.0.2", "label", "worker", NodeState.READY, ACTIVE)
    info = _task_info(pinned_service(), placing, {"n1": node}, moved=True)
    assert info.state is TaskState.MOVING
    assert info.error == (
        f"waits for a node: {err} (constraints: node.id == n1, node.labels.zone==mars)"
    )
    assert (info.address, info.node) == (None, "n1")
    first = _task_info(pinned_service(), placing, {"n1": node}, moved=False)
    assert first.state is TaskState.EXITED
    assert first.error.startswith(f"Swarm cannot place it: {err}")
    assert _task_info(pinned_service(), RUNNING_T2, {"n1": node}).address is not None


def test_a_new_reason_for_a_task_on_its_way_is_a_change_to_read() -> None:
    waiting = ("t2", "pending", "", "", "1", "no suitable node")
    assert _kinds(("t2", "pending", "", "", "1", ""), waiting) == [CREATED]
    assert _kinds(waiting, waiting) == []
    assert _kinds(waiting, ("t2", "running", "n1", "ran", "1", "")) == [STARTED]


def test_a_task_on_a_node_that_left_the_swarm_has_ended() -> None:
    """`docker node rm` of a node that still held a task: Swarm keeps the task's last state
    (running) for ever; the task ended, and its stage replaces it."""
    running = {**swarm_task("t1", "running", "running", "2026-01-01T00:00:01Z"), "NodeID": "gone"}
    info = _task_info(service(), running, {})
    assert info.state is TaskState.EXITED
    assert info.error == "lost: node gone left the swarm"


def test_one_listing_of_every_task_says_what_each_node_holds_and_whose() -> None:
    # GET /tasks?filters={"desired-state":["running"]}: the tasks' container labels say
    # which are Stackyard's, so `stackyard nodes` counts all and ours from one listing.
    def task(
        node: str, labels: dict[str, str], desired: str = "running", service: str = "s1"
    ) -> dict[str, object]:
        spec = {
            "ContainerSpec": {"Image": "busybox", "Labels": labels},
            "Resources": {"Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 1024}},
        }
        return {"NodeID": node, "DesiredState": desired, "Spec": spec, "ServiceID": service}

    ours = {LABEL_PLATFORM: "p1", LABEL_STACK: "shop", LABEL_STAGE: "prod"}
    theirs = {LABEL_PLATFORM: "p2", LABEL_STACK: "blog", LABEL_STAGE: "dev"}
    use = _node_use(
        [
            task("n1", ours),
            task("n1", theirs),
            task("n1", {}),  # no Stackyard task at all
            task("n2", ours),
            task("n2", ours, desired="shutdown"),  # being stopped: not meant to run
            task("", ours),  # not placed yet
            # removed a moment ago: Swarm has not marked its task for removal yet
            task("n2", ours, service="gone"),
        ],
        {"s1"},
    )
    assert use == {
        "n1": NodeUse(3, 0.75, 3072, owners=(("p1", "shop", "prod"), ("p2", "blog", "dev"))),
        "n2": NodeUse(1, 0.25, 1024, owners=(("p1", "shop", "prod"),)),
    }
    assert use["n1"].own("p1") == [("shop", "prod")]
    assert use["n1"].own("p3") == []
