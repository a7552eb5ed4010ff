"""SwarmEngine passes the Engine contract on the real three-node swarm, and does what only a
cluster engine does: nodes, their address labels, placement, secrets, pull errors by node.

Images are built FROM busybox and pushed to a real registry with auth; every node pulls by
digest with the login the task carries (``--with-registry-auth``). Traffic goes to
127.0.0.0/8 only: the nodes advertise 127.0.0.2, .3 and .4.
"""
# ruff: noqa: F811 - pytest fixtures imported from other modules are used as arguments

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import docker
import pytest

from stackyard.engines.base import (
    LABEL_PLATFORM,
    NODE_LABEL_ADDRESS,
    Availability,
    EngineError,
    NodeState,
    Placement,
    TaskEventKind,
    TaskInfo,
    TaskState,
)
from stackyard.engines.swarm import SwarmEngine
from stackyard.errors import UsageError
from stackyard.plugins import load
from tests.engine_contract import (
    RUN,
    Collector,
    ContractImages,
    EngineContract,
    NodesContract,
    SpecFactory,
)
from tests.integration.registry_fixtures import live_registry  # noqa: F401
from tests.integration.swarm.conftest import SwarmCluster
from tests.integration.test_engine_docker import (  # noqa: F401
    MISSING,
    BuiltImages,
    get_until_it_answers,
    spec_for,
    test_images,
)

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

SERVICE_NAME = "com.docker.swarm.service.name"  # the label Swarm puts on a task's container


@pytest.fixture
def swarm_engine(swarm_cluster: SwarmCluster) -> Iterator[SwarmEngine]:
    engine = SwarmEngine(swarm_cluster.endpoint)
    try:
        yield engine
    finally:
        for task in engine.list({LABEL_PLATFORM: RUN}):
            engine.remove(task.id)
        engine.close()


@pytest.fixture
def node_ids(swarm_cluster: SwarmCluster) -> dict[str, str]:
    return swarm_cluster.node_ids()


class TestSwarmEngine(EngineContract):
    @pytest.fixture
    def engine(self, swarm_engine: SwarmEngine) -> SwarmEngine:
        return swarm_engine

    @pytest.fixture
    def images(self, test_images: BuiltImages) -> ContractImages:
        return ContractImages(
            serving=test_images.ref("serving"),
            crashing=test_images.ref("crashing"),
            login=test_images.login,
        )

    @pytest.fixture
    def task_host(self, swarm_engine: SwarmEngine) -> Callable[[TaskInfo], str]:
        addresses = {node.id: node.address for node in swarm_engine.nodes()}
        return lambda task: addresses[task.node]


class TestSwarmNodes(NodesContract):
    @pytest.fixture
    def engine(self, swarm_engine: SwarmEngine) -> SwarmEngine:
        return swarm_engine

    @pytest.fixture
    def make_spec(self, spec_for: SpecFactory) -> SpecFactory:
        return spec_for

    @pytest.fixture
    def pinned_node(self, node_ids: dict[str, str]) -> str:
        return node_ids["n3"]


def test_registered_under_the_engines_entry_point() -> None:
    assert load("engine", "swarm") is SwarmEngine


def test_an_engine_that_is_no_swarm_manager_names_docker_swarm_init(
    swarm_cluster: SwarmCluster,
) -> None:
    # The shared main engine is in no swarm; n2 is a worker of the test swarm.
    for endpoint, said in (
        (None, "is not part of a swarm"),
        (swarm_cluster.nodes["n2"].socket, "is a swarm worker, not a swarm manager"),
    ):
        engine = SwarmEngine(endpoint)
        try:
            with pytest.raises(UsageError, match=said) as caught:
                engine.verify()
        finally:
            engine.close()
        assert caught.value.hint is not None
        assert "docker swarm init" in caught.value.hint


def test_a_manager_answers_the_ping_through_a_client_of_its_own(swarm_engine: SwarmEngine) -> None:
    # The ping's own short-timeout client asks the manager's /info, twice: each check makes
    # its client and closes it (one left open would be a ResourceWarning, an error here).
    swarm_engine.ping()
    swarm_engine.ping()


def test_nodes_report_the_address_their_label_gives(
    swarm_engine: SwarmEngine, swarm_cluster: SwarmCluster, node_ids: dict[str, str]
) -> None:
    nodes = {node.id: node for node in swarm_engine.nodes()}
    for name, node in swarm_cluster.nodes.items():
        found = nodes[node_ids[name]]
        assert (found.address, found.address_from) == (node.address, "label")
        assert found.state is NodeState.READY
        assert found.availability is Availability.ACTIVE
        assert found.role == ("manager" if name == "n1" else "worker")


def test_a_pinned_task_runs_on_its_node_and_answers_at_its_address(
    swarm_engine: SwarmEngine,
    swarm_cluster: SwarmCluster,
    node_ids: dict[str, str],
    spec_for: SpecFactory,
) -> None:
    n3 = swarm_cluster.nodes["n3"]
    spec = spec_for(placement=Placement(node=node_ids["n3"]), env={"GREETING": "hi"})
    task = swarm_engine.start(spec)
    assert (task.node, str(task.address)) == (node_ids["n3"], f"{n3.address}:{spec.port}")
    assert get_until_it_answers(f"http://{n3.address}:{spec.port}/").text == "hello\n"
    client = n3.client()
    try:
        (container,) = client.containers.list(filters={"label": f"{SERVICE_NAME}={spec.name}"})
        env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
        host = container.attrs["HostConfig"]
    finally:
        client.close()
    assert (env["PORT"], env["HOST"], env["GREETING"]) == (str(spec.port), n3.address, "hi")
    assert container.attrs["Config"]["Image"] == spec.image
    assert (host["NetworkMode"], host["Init"]) == ("host", True)


def test_node_use_counts_every_service_on_its_node_with_its_reservations(
    swarm_engine: SwarmEngine,
    swarm_cluster: SwarmCluster,
    node_ids: dict[str, str],
    spec_for: SpecFactory,
) -> None:
    n3 = node_ids["n3"]
    nodes = {node.id: node for node in swarm_engine.nodes()}
    assert nodes[n3].cpu == node_cpus(swarm_cluster, n3) > 0
    assert nodes[n3].memory > 0
    spec = spec_for(placement=Placement(node=n3), cpu=0.25, memory=48 * 1024 * 1024)
    assert swarm_engine.start(spec).node == n3
    # Counted from Swarm's own tasks (of every service, whoever made it): the task is one of
    # n3's, its reservations among n3's. The swarm is shared, so others may add to them.
    use = swarm_engine.node_use()
    assert use[n3].tasks >= 1
    assert use[n3].cpu >= 0.25
    assert use[n3].memory >= 48 * 1024 * 1024
    assert set(use) <= set(nodes)


def test_a_service_has_one_replica_limits_reservations_and_no_restarts(
    swarm_engine: SwarmEngine, swarm_cluster: SwarmCluster, spec_for: SpecFactory
) -> None:
    spec = spec_for(cpu=0.25, memory=64 * 1024 * 1024, stop_timeout=7)
    task = swarm_engine.start(spec)
    client = swarm_cluster.manager.client()
    try:
        service = client.api.inspect_service(task.id)["Spec"]
    finally:
        client.close()
    template = service["TaskTemplate"]
    wanted = {"NanoCPUs": 250_000_000, "MemoryBytes": 64 * 1024 * 1024}
    assert template["Resources"] == {"Limits": wanted, "Reservations": wanted}
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["ContainerSpec"]["StopGracePeriod"] == 7_000_000_000
    assert template["ContainerSpec"]["StopSignal"] == "SIGTERM"
    assert service["Mode"] == {"Replicated": {"Replicas": 1}}
    assert "UpdateConfig" not in service or not service["UpdateConfig"]


def test_files_reach_the_task_as_swarm_secrets_and_leave_with_it(
    swarm_engine: SwarmEngine, swarm_cluster: SwarmCluster, spec_for: SpecFactory
) -> None:
    # An image that does not run as root, as well-made images do, reads its env file:
    # before, the secret was root's with mode 0600, and the app could not open it.
    spec = spec_for("nobody", files={"/run/stackyard/app/.env": "SECRET=s3cr3t\n"})
    task = swarm_engine.start(spec)
    node = next(n for n in swarm_cluster.nodes.values() if n.node_id() == task.node)
    client = node.client()
    try:
        (container,) = client.containers.list(filters={"label": f"{SERVICE_NAME}={spec.name}"})
        code, output = container.exec_run(["cat", "/run/stackyard/app/.env"])  # as nobody
        assert (code, output) == (0, b"SECRET=s3cr3t\n")
        code, output = container.exec_run(["stat", "-c", "%a", "/run/stackyard/app/.env"])
        assert output.split() == [b"444"]
        code, output = container.exec_run(["id", "-un"])
        assert output.strip() == b"nobody"
    finally:
        client.close()
    manager = swarm_cluster.manager.client()
    try:
        assert [s.name for s in manager.secrets.list(filters={"name": spec.name})] == [
            f"{spec.name}-file0"
        ]
        swarm_engine.remove(task.id)
        assert manager.secrets.list(filters={"name": spec.name}) == []
    finally:
        manager.close()


def test_a_constraint_no_node_satisfies_fails_the_start_naming_it(
    swarm_engine: SwarmEngine, spec_for: SpecFactory
) -> None:
    spec = spec_for(placement=Placement(constraints=("node.labels.zone == nowhere",)))
    with pytest.raises(EngineError, match="no suitable node") as caught:
        swarm_engine.start(spec)
    assert "node.labels.zone == nowhere" in str(caught.value)
    assert spec.name not in {t.name for t in swarm_engine.list({LABEL_PLATFORM: RUN})}


def test_a_digest_the_registry_lacks_fails_the_start_naming_the_node(
    swarm_engine: SwarmEngine,
    node_ids: dict[str, str],
    spec_for: SpecFactory,
    test_images: BuiltImages,
) -> None:
    image = f"{test_images.repository}@{MISSING}"
    spec = replace(spec_for(placement=Placement(node=node_ids["n2"])), image=image)
    # (The earlier tests' tasks on n2 may still hold its cpu reservations for a moment after
    # their removal; the start waits for room, see the next test.)
    with pytest.raises(EngineError) as caught:
        swarm_engine.start(spec)
    assert "could not pull the image" in str(caught.value)
    assert "127.0.0.3" in str(caught.value)  # the node that tried
    assert image in str(caught.value)


def node_cpus(swarm_cluster: SwarmCluster, node_id: str) -> float:
    client = swarm_cluster.manager.client()
    try:
        nano = client.api.inspect_node(node_id)["Description"]["Resources"]["NanoCPUs"]
    finally:
        client.close()
    return int(nano) / 1_000_000_000


def test_a_start_on_a_full_node_waits_for_room_then_fails_saying_so(
    swarm_engine: SwarmEngine,
    swarm_cluster: SwarmCluster,
    node_ids: dict[str, str],
    spec_for: SpecFactory,
) -> None:
    n2 = Placement(node=node_ids["n2"])
    hog = swarm_engine.start(spec_for(placement=n2, cpu=node_cpus(swarm_cluster, n2.node)))
    # Room comes back while the start waits: the task Swarm could not place runs then.
    freeing = threading.Timer(3.0, swarm_engine.remove, args=(hog.id,))
    freeing.start()
    try:
        placed = swarm_engine.start(spec_for(placement=n2, cpu=0.25))
    finally:
        freeing.join()
    assert (placed.state, placed.node) == (TaskState.RUNNING, n2.node)
    # No room for longer than the engine waits: the start fails, naming the reason.
    impatient = SwarmEngine(swarm_cluster.endpoint, placement_wait=2)
    try:
        swarm_engine.start(spec_for(placement=n2, cpu=node_cpus(swarm_cluster, n2.node) - 0.25))
        wanted = spec_for(placement=n2, cpu=0.5)
        with pytest.raises(EngineError, match="insufficient resources") as caught:
            impatient.start(wanted)
    finally:
        impatient.close()
    assert "still no room after 2 s" in str(caught.value)
    assert wanted.name not in {t.name for t in swarm_engine.list({LABEL_PLATFORM: RUN})}


def test_a_node_without_the_login_cannot_pull(
    swarm_engine: SwarmEngine,
    swarm_cluster: SwarmCluster,
    node_ids: dict[str, str],
    spec_for: SpecFactory,
) -> None:
    spec = spec_for("nobody", login=None, placement=Placement(node=node_ids["n3"]))
    client = swarm_cluster.nodes["n3"].client()
    try:  # a node that has the image already starts it from its own copy
        client.images.remove(spec.image, force=True)
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()
    with pytest.raises(EngineError, match="could not pull the image"):
        swarm_engine.start(spec)


def test_a_node_label_change_is_an_event_and_moves_the_address(
    swarm_engine: SwarmEngine, node_ids: dict[str, str], spec_for: SpecFactory
) -> None:
    n2 = node_ids["n2"]
    task = swarm_engine.start(spec_for(placement=Placement(node=n2)))
    try:
        with swarm_engine.events({LABEL_PLATFORM: RUN}, window=60) as stream:
            seen = Collector(stream)
            swarm_engine.update_node(n2, labels={NODE_LABEL_ADDRESS: "127.0.0.13"})
            assert seen.wait(n2, TaskEventKind.NODE), seen.events
        assert swarm_engine.inspect(task.id).address is not None
        assert str(swarm_engine.inspect(task.id).address).startswith("127.0.0.13:")
    finally:
        swarm_engine.update_node(n2, labels={NODE_LABEL_ADDRESS: "127.0.0.3"})


def test_a_bad_address_label_falls_back_and_says_why(
    swarm_engine: SwarmEngine, node_ids: dict[str, str]
) -> None:
    n3 = node_ids["n3"]
    try:
        node = swarm_engine.update_node(n3, labels={NODE_LABEL_ADDRESS: "not an address"})
        assert node.address_from == "engine"
        assert "not an IP address or a host name" in node.address_problem
    finally:
        swarm_engine.update_node(n3, labels={NODE_LABEL_ADDRESS: "127.0.0.4"})


def test_availability_changes_and_comes_back(
    swarm_engine: SwarmEngine, node_ids: dict[str, str]
) -> None:
    n3 = node_ids["n3"]
    try:
        assert swarm_engine.update_node(n3, availability=Availability.PAUSE).availability is (
            Availability.PAUSE
        )
    finally:
        node = swarm_engine.update_node(n3, availability=Availability.ACTIVE)
    assert node.availability is Availability.ACTIVE


def test_stop_ends_a_task_with_sigterm_quickly(
    swarm_engine: SwarmEngine, spec_for: SpecFactory
) -> None:
    task = swarm_engine.start(spec_for(stop_timeout=10))
    began = time.monotonic()
    swarm_engine.stop(task.id, timeout=10)
    assert time.monotonic() - began < 10
    info = swarm_engine.inspect(task.id)
    # SIGKILL would have come after the 10 s grace period. Swarm reaps the task of a service
    # scaled to 0 soon after it ends, and its exit code with it: when it is still there,
    # the code is SIGTERM's.
    assert info.state is TaskState.EXITED
    assert info.exit_code in (143, None)


def test_a_stopped_task_is_removed_only_once_swarm_has_reaped_it(
    swarm_engine: SwarmEngine, swarm_cluster: SwarmCluster, spec_for: SpecFactory
) -> None:
    """Docker 20.10's manager panics when a service is removed while Swarm's reaper deletes
    one of its tasks (swarmkit's SetServiceTasksRemove): a stop scales the service to 0,
    and the reaper deletes its task soon after it ends. The removal waits for that."""
    client: docker.DockerClient = swarm_cluster.manager.client()
    left: list[list[tuple[str, str]]] = []
    changes = swarm_engine._change_api()
    removing = changes.remove_service

    def remove_service(service_id: str) -> object:
        tasks = client.api.tasks(filters={"service": service_id})
        left.append([(t["DesiredState"], t["Status"]["State"]) for t in tasks])
        return removing(service_id)

    try:
        for _ in range(3):
            task = swarm_engine.start(spec_for(stop_timeout=10))
            swarm_engine.stop(task.id, timeout=10)
            changes.remove_service = remove_service  # type: ignore[method-assign]
            try:
                swarm_engine.remove(task.id)
            finally:
                del changes.remove_service
    finally:
        client.close()
    assert left == [[], [], []]


def test_a_docker_client_sees_the_service_labels(
    swarm_engine: SwarmEngine, swarm_cluster: SwarmCluster, spec_for: SpecFactory
) -> None:
    spec = spec_for()
    task = swarm_engine.start(spec)
    client: docker.DockerClient = swarm_cluster.manager.client()
    try:
        labels = client.api.inspect_service(task.id)["Spec"]["Labels"]
    finally:
        client.close()
    assert labels["dev.stackyard.port"] == str(spec.port)
    assert labels[LABEL_PLATFORM] == RUN
