"""The platform on the real three-node swarm: spread, rolling deployments under load, drains,
joins, placement constraints and the bad input a cluster brings.

One platform (``--engine swarm``, the manager's socket) serves the module; each test deploys
its own stack. Node deaths and control-plane kills are in their own modules. "Another
platform" on the same swarm is a SwarmEngine starting the engine tests' images under its own
platform label.
"""
# ruff: noqa: F811 - pytest fixtures imported from other modules are used as arguments

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from stackyard.engines.base import NodeUse, Placement, TaskInfo
from stackyard.engines.swarm import SwarmEngine
from tests.engine_contract import SpecFactory
from tests.integration.conftest import RunningPlatform
from tests.integration.gitrepo import GitRepo
from tests.integration.registry_fixtures import live_registry  # noqa: F401
from tests.integration.swarm.cluster import (
    build_and_release,
    check,
    converged,
    delete_stacks,
    deploy,
    deployments,
    new_stack,
    nodes,
    served_version,
    ship,
    stage_load,
    stage_url,
    stop_swarm_platform,
    swarm_platform,
    tasks,
    upstreams,
    wait_for,
)
from tests.integration.swarm.conftest import SwarmCluster
from tests.integration.test_engine_docker import spec_for, test_images  # noqa: F401
from tests.integration.test_pipelines import wait_run

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

LOAD_BOUND = 300  # seconds: no load outlives this; each stops once its work is done


@pytest.fixture(scope="module")
def yard(
    tmp_path_factory: pytest.TempPathFactory, swarm_cluster: SwarmCluster
) -> Iterator[RunningPlatform]:
    running = swarm_platform(tmp_path_factory.mktemp("swarm") / "data", swarm_cluster)
    try:
        yield running
    finally:
        stop_swarm_platform(running, swarm_cluster)


@pytest.fixture(autouse=True)
def leaves_no_stack(yard: RunningPlatform) -> Iterator[None]:
    """Each test's stacks are deleted when it ends (see ``delete_stacks``)."""
    yield
    delete_stacks(yard)


def node_of(task: dict[str, object], cluster_ids: dict[str, str]) -> str:
    names = {node_id: name for name, node_id in cluster_ids.items()}
    return names[str(task["node"])]


def test_three_replicas_run_one_on_each_node_and_check_names_them(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    new_stack(yard, tmp_path, "spread", replicas=3)
    record = ship(yard, "spread")
    assert record["status"] == "COMPLETED", record
    state = converged(yard, "spread")
    ids = swarm_cluster.node_ids()
    running = tasks(yard, "spread")
    assert sorted(node_of(t, ids) for t in running) == ["n1", "n2", "n3"]
    addresses = {swarm_cluster.nodes[node_of(t, ids)].address for t in running}
    assert {t["address"].rpartition(":")[0] for t in running} == addresses
    assert served_version(stage_url(yard, "spread")) == "v1"
    lines = yard.cli("check", "spread", "--stage", "dev").stdout.splitlines()
    assert lines[0] == f"dev ENV_DIGEST: {state['digest']}"
    for line in lines[1:]:
        assert line.startswith(f"TASK_DIGEST: {state['digest']} (match) on node ")
    assert len(lines) == 4
    table = yard.cli("tasks", "spread", "--stage", "dev").stdout
    assert "NODE" in table.splitlines()[0]


def test_a_rolling_deployment_under_load_fails_no_request_and_ends_new_on_every_node(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    repo = new_stack(yard, tmp_path, "rolling", replicas=3)
    ship(yard, "rolling")
    url = stage_url(yard, "rolling")
    repo.set_version("v2")
    build_and_release(yard, "rolling")
    load = stage_load(url, seconds=LOAD_BOUND)
    try:
        record = deploy(yard, "rolling")
    finally:
        result = load.stop()
    assert record["status"] == "COMPLETED", record
    assert result.requests > 0
    assert result.errors == 0, result.raw
    state = converged(yard, "rolling")
    assert all(t["match"] for t in state["tasks"])
    ids = swarm_cluster.node_ids()
    running = tasks(yard, "rolling")
    assert sorted(node_of(t, ids) for t in running) == ["n1", "n2", "n3"]
    assert {t["digest"] for t in running} == {state["digest"]}
    assert served_version(url) == "v2"


def test_a_new_task_goes_past_the_node_another_platforms_services_load(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster, spec_for: SpecFactory
) -> None:
    ids = swarm_cluster.node_ids()
    # The stage may use n2 and n3. Counting its own platform's tasks only, placement took the
    # lower node id of the two (a tie); another platform's services load that one.
    loaded, free = sorted((ids["n2"], ids["n3"]))
    other = SwarmEngine(swarm_cluster.endpoint)  # another platform on the same swarm
    theirs: list[TaskInfo] = []
    try:
        use = other.node_use()  # the swarm is shared: load `loaded` past what `free` holds
        ahead = use.get(free, NodeUse()).tasks - use.get(loaded, NodeUse()).tasks
        for _ in range(max(0, ahead) + 3):
            spec = spec_for(placement=Placement(node=loaded), cpu=0.01, memory=16 * 1024**2)
            theirs.append(other.start(spec))
        assert {t.node for t in theirs} == {loaded}
        new_stack(
            yard,
            tmp_path,
            "crowded",
            extra=f"    placement: {{constraints: ['node.id != {ids['n1']}']}}\n",
        )
        assert ship(yard, "crowded")["status"] == "COMPLETED"
        assert [t["node"] for t in tasks(yard, "crowded")] == [free]
        # `nodes` shows what runs on each node, and this platform's share of it (the swarm
        # is shared: other sessions' services may run there too, hence >=).
        listed = {n["id"]: n for n in nodes(yard)}
        assert listed[loaded]["tasks"] == 0
        assert listed[loaded]["all_tasks"] >= len(theirs), listed[loaded]
        assert listed[free]["tasks"] == 1
        assert listed[free]["all_tasks"] >= 1, listed[free]
        table = yard.cli("nodes").stdout.splitlines()
        assert "TASKS" in table[0]
        row = next(line for line in table if loaded[:12] in line)
        assert " (0 ours)" in row, row
        assert " (1 ours)" in next(line for line in table if free[:12] in line)
    finally:
        for task in theirs:
            other.remove(task.id)
        other.close()


def test_nodes_lists_each_node_with_its_address_role_and_tasks(
    yard: RunningPlatform, swarm_cluster: SwarmCluster
) -> None:
    found = {n["address"]: n for n in nodes(yard)}
    assert set(found) == {node.address for node in swarm_cluster.nodes.values()}
    manager = found[swarm_cluster.manager.address]
    assert (manager["role"], manager["state"], manager["availability"]) == (
        "manager",
        "ready",
        "active",
    )
    assert all(n["address_from"] == "label" for n in found.values())
    table = yard.cli("nodes").stdout
    assert "127.0.0.3" in table
    assert "AVAILABILITY" in table.splitlines()[0]


def test_drain_moves_every_task_under_load_without_a_failed_request(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    new_stack(yard, tmp_path, "drained", replicas=2)
    ship(yard, "drained")
    converged(yard, "drained")
    ids = swarm_cluster.node_ids()
    names = {v: k for k, v in ids.items()}
    # A worker: draining the manager (n1) once coincided with its dockerd dying (see
    # docs/engines.md); the move itself is the same on any node.
    victim = next(names[t["node"]] for t in tasks(yard, "drained") if names[t["node"]] != "n1")
    address = swarm_cluster.nodes[victim].address
    load = stage_load(stage_url(yard, "drained"), seconds=LOAD_BOUND)
    try:
        yard.cli("nodes", "drain", address, timeout=180)
    finally:
        result = load.stop()
    try:
        assert result.errors == 0, result.raw
        drained = next(n for n in nodes(yard) if n["address"] == address)
        assert (drained["availability"], drained["draining"], drained["tasks"]) == (
            "drain",
            False,
            0,
        )
        running = tasks(yard, "drained")
        assert victim not in {names[t["node"]] for t in running}
        assert len(running) == 2
        assert check(yard, "drained")["converged"]
    finally:
        yard.cli("nodes", "activate", address)
    # Nothing moves back by itself once the node is active again.
    assert victim not in {names[t["node"]] for t in tasks(yard, "drained")}
    assert next(n for n in nodes(yard) if n["address"] == address)["availability"] == "active"


def test_draining_the_last_node_a_stage_may_use_is_refused_naming_it(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    n3 = swarm_cluster.nodes["n3"]
    new_stack(
        yard,
        tmp_path,
        "pinned",
        extra="    placement: {constraints: ['node.labels.dev.stackyard.address == "
        f"{n3.address}']}}\n",
    )
    ship(yard, "pinned")
    ids = swarm_cluster.node_ids()
    assert [t["node"] for t in tasks(yard, "pinned")] == [ids["n3"]]
    refused = yard.cli("nodes", "drain", n3.address, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "pinned/dev" in refused.stderr
    assert "--force" in refused.stderr
    assert next(n for n in nodes(yard) if n["address"] == n3.address)["availability"] == "active"
    # A node the cluster does not have: refused, naming it and how to list the nodes.
    unknown = yard.cli("nodes", "drain", "no-such-node", check=False)
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert "no node 'no-such-node' in the cluster" in unknown.stderr
    assert "stackyard nodes lists them" in unknown.stderr


def test_a_forced_drain_stops_the_nodes_tasks_at_once_and_the_routes_follow(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    n3 = swarm_cluster.nodes["n3"]
    ids = swarm_cluster.node_ids()
    new_stack(yard, tmp_path, "spreadout", replicas=3)
    ship(yard, "spreadout")
    on_n3 = f"node.labels.dev.stackyard.address == {n3.address}"
    new_stack(yard, tmp_path, "stuck", extra=f"    placement: {{constraints: ['{on_n3}']}}\n")
    ship(yard, "stuck")
    assert ids["n3"] in {t["node"] for t in tasks(yard, "spreadout")}
    assert [t["node"] for t in tasks(yard, "stuck")] == [ids["n3"]]
    try:
        # "stuck" may run on n3 only: a plain drain is refused, --force drains it at once.
        forced = yard.cli("nodes", "drain", n3.address, "--force", "--json")
        assert json.loads(forced.stdout)["availability"] == "drain"

        def spreadout_off_n3() -> bool:
            state = check(yard, "spreadout")
            addresses = {t["address"] for t in tasks(yard, "spreadout")}
            return bool(
                state["converged"]
                and all(t["node"] != ids["n3"] for t in state["tasks"])
                and set(upstreams(yard, "spreadout")) == addresses
            )

        # The stage that may move replaces its task elsewhere, and the route follows.
        wait_for("spreadout's 3 tasks off n3 and routed", spreadout_off_n3, timeout=180)
        assert not any(u.startswith(f"{n3.address}:") for u in upstreams(yard, "spreadout"))
        assert served_version(stage_url(yard, "spreadout")) == "v1"
        # The stage that may not has no task and no upstream left, and check says so.
        wait_for("stuck has no task routed", lambda: upstreams(yard, "stuck") == [], timeout=120)
        assert not check(yard, "stuck")["converged"]
    finally:
        yard.cli("nodes", "activate", n3.address)
    # Back on n3 once it takes tasks again: healthy, routed, serving.
    state = converged(yard, "stuck", timeout=180)
    assert [t["node"] for t in state["tasks"]] == [ids["n3"]]
    wait_for(
        "stuck routed to its task on n3",
        lambda: upstreams(yard, "stuck") == [t["address"] for t in tasks(yard, "stuck")],
    )
    assert served_version(stage_url(yard, "stuck")) == "v1"


def test_a_constraint_no_node_satisfies_fails_the_deployment_at_once_while_old_tasks_serve(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = new_stack(yard, tmp_path, "nowhere", replicas=2)
    good = ship(yard, "nowhere")["digest"]
    url = stage_url(yard, "nowhere")
    text = (repo.path / "stackyard.yml").read_text()
    repo.write(
        "stackyard.yml", text + "    placement: {constraints: ['node.labels.zone == mars']}\n"
    )
    repo.set_version("v2")
    build_and_release(yard, "nowhere")
    record = deploy(yard, "nowhere", ok=False)
    assert record["status"] == "FAILED"
    assert "node.labels.zone == mars" in record["reason"]
    # No node has the label: failed at once, not after the error budget's retries.
    assert "the constraints hold for no node of the cluster" in record["reason"]
    assert served_version(url) == "v1"
    assert {t["digest"] for t in tasks(yard, "nowhere")} == {good}


def test_a_node_that_cannot_pull_fails_the_deployment_with_its_pull_error_while_old_tasks_serve(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    n3 = swarm_cluster.nodes["n3"]
    repo = new_stack(yard, tmp_path, "unpulled")
    good = ship(yard, "unpulled")["digest"]
    url = stage_url(yard, "unpulled")
    text = (repo.path / "stackyard.yml").read_text()
    pinned = f"node.labels.dev.stackyard.address == {n3.address}"
    repo.write("stackyard.yml", text + f"    placement: {{constraints: ['{pinned}']}}\n")
    # A digest of its own: n3 starts a digest it already holds without pulling, and other
    # tests run the same v2 of the example there.
    repo.write("www/run.txt", uuid.uuid4().hex)
    repo.set_version("v2")
    yard.cli("build", "unpulled", timeout=300)
    release = json.loads(yard.cli("release", "unpulled", "--stage", "dev", "--json").stdout)
    # The registry loses the new image's config (its manifest stays, so the deploy's own
    # question to the registry passes): n3, the one node the new release may run on,
    # cannot pull it, for real, on that node (no other node is asked).
    creds = json.loads((yard.data_dir / "registry-credentials.json").read_text())
    auth = (creds["username"], creds["password"])
    base = f"http://{yard.registry}/v2/unpulled"
    schema2 = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    manifest_url = f"{base}/manifests/{release['digest']}"
    manifest = httpx.get(manifest_url, auth=auth, headers=schema2).json()
    deleted = httpx.delete(f"{base}/blobs/{manifest['config']['digest']}", auth=auth)
    assert deleted.status_code == 202
    assert httpx.head(manifest_url, auth=auth, headers=schema2).status_code == 200
    node_log = Path(f"/var/log/stackyard-swarm-{n3.name}.log")
    logged = node_log.stat().st_size
    load = stage_load(url, seconds=LOAD_BOUND)
    try:
        deploy(yard, "unpulled", ok=False)
    finally:
        served = load.stop()
    assert served.requests > 0
    assert served.errors == 0, served.raw  # the old task served all along
    listed = deployments(yard, "unpulled")
    record = next(d for d in listed if d["release_number"] == release["number"])
    assert record["status"] == "FAILED", record
    assert f"({n3.address})" in record["reason"], record  # the node
    # Each failed start is logged with n3's pull error. (The reason quotes the last failed
    # task; once it was the same start seen again by the task watch: docs/engines.md.)
    said = Path(record["log_path"]).read_text(encoding="utf-8")
    pull_error = f"({n3.address}) could not pull the image: No such image: "
    assert f"{pull_error}{yard.registry}/unpulled@{release['digest']}" in said, said
    # The node's own daemon logged the real cause of that pull error: the registry lacks
    # the image's config ("pulling image failed" names the task; "fatal task error", of the
    # same task, the digest).
    n3_id = swarm_cluster.node_ids()["n3"]
    with node_log.open(encoding="utf-8", errors="replace") as log:
        log.seek(logged)
        lines = list(log)
    failed_tasks = {
        line.rpartition("task.id=")[2].split()[0]
        for line in lines
        if "fatal task error" in line and release["digest"] in line and "task.id=" in line
    }
    pull_errors = [
        line
        for line in lines
        if "pulling image failed" in line
        and any(f"task.id={task}" in line for task in failed_tasks)
    ]
    assert pull_errors, f"no pull error for {release['digest']} in {node_log}"
    assert all(f"node.id={n3_id}" in line for line in pull_errors), pull_errors
    assert "error pulling image configuration" in pull_errors[0], pull_errors
    assert "unknown blob" in pull_errors[0], pull_errors
    assert served_version(url) == "v1"
    assert {t["digest"] for t in tasks(yard, "unpulled")} == {good}
    assert converged(yard, "unpulled")["digest"] == good


def test_a_node_address_that_is_not_an_address_is_refused_naming_the_option(
    yard: RunningPlatform, swarm_cluster: SwarmCluster
) -> None:
    refused = yard.cli("nodes", "label", "127.0.0.3", "--address", "not an address", check=False)
    assert refused.returncode == 2
    assert "--address" in refused.stderr
    assert "is not an IP address or a host name" in refused.stderr
    listed = {n["address"] for n in nodes(yard)}
    assert "127.0.0.3" in listed


def test_a_node_that_joins_takes_the_next_deployment_and_nothing_moves_by_itself(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    repo = new_stack(yard, tmp_path, "joined", replicas=3)
    ship(yard, "joined")
    before = {t["id"]: t["node"] for t in tasks(yard, "joined")}
    swarm_cluster.scale(4)
    try:
        n4 = swarm_cluster.nodes["n4"]
        wait_for("n4 listed", lambda: n4.address in {n["address"] for n in nodes(yard)})
        assert {t["id"]: t["node"] for t in tasks(yard, "joined")} == before
        repo.set_version("v2")
        ship(yard, "joined")
        converged(yard, "joined")
        where = Counter(t["node"] for t in tasks(yard, "joined"))
        assert where[swarm_cluster.node_ids()["n4"]] == 1
        yard.cli("nodes", "drain", n4.address, timeout=180)
    finally:
        swarm_cluster.scale(3)
    converged(yard, "joined")
    assert len(deployments(yard, "joined")) == 2


PIPELINE = """\
stages:
  - name: dev
    cpu: 0.1
    memory: 64m
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 5}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
  - name: staging
    replicas: 2
    cpu: 0.1
    memory: 64m
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 5}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
  - name: prod
    promotion: approval
    replicas: 3
    cpu: 0.1
    memory: 64m
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 5}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
"""


def test_git_push_goes_through_dev_staging_and_prod_on_the_swarm(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "shop")
    repo.write("stackyard.yml", PIPELINE)
    repo.commit("three stages on a cluster, prod behind an approval")
    yard.cli("stacks", "create", "shop", "--repo", str(repo.path))
    repo.git("remote", "add", "stackyard", yard.cli("remote", "shop").stdout.strip())
    pushed = subprocess.run(
        ["git", "push", "stackyard", "main"],
        cwd=repo.path, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "pipeline run 1 started" in pushed.stderr
    waiting = wait_run(yard, "shop", 1, ("WAITING", "FAILED"), timeout=300)
    assert waiting["status"] == "WAITING", waiting
    yard.cli("approve", "shop", "--stage", "prod")
    done = wait_run(yard, "shop", 1, ("SUCCEEDED", "FAILED"), timeout=300)
    assert done["status"] == "SUCCEEDED", done
    ids = swarm_cluster.node_ids()
    digests = set()
    for stage, spread in (("dev", 1), ("staging", 2), ("prod", 3)):
        state = converged(yard, "shop", stage)
        digests.add(state["digest"])
        running = tasks(yard, "shop", stage)
        assert {t["digest"] for t in running} == {state["digest"]}
        assert len({node_of(t, ids) for t in running}) == spread, running
        assert served_version(stage_url(yard, "shop", stage)) == "v1"
    assert len(digests) == 1  # built once, promoted as the same image


LOAD_CONNECTIONS = 8  # stage_load's default

# The app of the reschedule test: /healthz answers 404 for its first 3 s on every start, so
# a task routed before a health check passed at its address shows up as such.
LATE_HEALTH_DOCKERFILE = """\
FROM busybox:latest
COPY www /www
CMD ["sh", "-c", "mv /www/healthz /healthz.later; (sleep 3; mv /healthz.later /www/healthz) & \
exec busybox httpd -f -p ${HOST:-127.0.0.1}:${PORT:-8080} -h /www"]
"""


class RoutePoller:
    """Reads the stage's upstreams (as the keeper applied them) in a loop on a thread, and
    asks ``/healthz`` at ``probe`` (an address) right after each read: (upstreams, passed,
    monotonic time)."""

    def __init__(self, yard: RunningPlatform, stack: str, probe: str) -> None:
        self.samples: list[tuple[frozenset[str], bool, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(yard, stack, probe))
        self._thread.start()

    def _run(self, yard: RunningPlatform, stack: str, probe: str) -> None:
        with httpx.Client(timeout=1) as client:
            while not self._stop.is_set():
                routed = frozenset(upstreams(yard, stack))
                try:
                    passed = client.get(f"http://{probe}/healthz").status_code == 200
                except httpx.HTTPError:
                    passed = False
                self.samples.append((routed, passed, time.monotonic()))
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def rejoined(yard: RunningPlatform, stack: str, task_id: str, address: str) -> Callable[[], bool]:
    """A probe: the task answers at ``address``, is healthy there and routed."""

    def probe() -> bool:
        task = {t["id"]: t for t in tasks(yard, stack)}.get(task_id)
        return (
            task is not None
            and task["address"] == address
            and task["health"] == "healthy"
            and address in upstreams(yard, stack)
        )

    return probe


def routed_only_once_healthy(poller: RoutePoller, old: str, new: str) -> tuple[float, float]:
    """Assert that the old address left the route for good and the new one was routed only
    once its /healthz passed (the app's answers 404 for 3 s); when each happened."""
    samples = poller.samples
    assert samples, "the poller read nothing"
    left = next(i for i, (routed, _, _) in enumerate(samples) if old not in routed)
    assert not any(old in routed for routed, _, _ in samples[left:]), samples
    joined = next(i for i, (routed, _, _) in enumerate(samples) if new in routed)
    assert left <= joined
    assert samples[joined][1], f"{new} routed before its /healthz passed: {samples}"
    return samples[left][2], samples[joined][2]


def moved_under_load(
    yard: RunningPlatform,
    cluster: SwarmCluster,
    stack: str,
    task: dict[str, Any],
    new_address: str,
    *update: str,
) -> None:
    """Under load, the operator's ``docker service update`` of ``task``'s service moves it
    to ``new_address``: the old address leaves the route for good, the new one is routed
    only once its /healthz passed there, and no request fails but a response in flight on
    the old task when Swarm stops it."""
    old_address = task["address"]
    poller = RoutePoller(yard, stack, new_address)
    load = stage_load(stage_url(yard, stack), seconds=LOAD_BOUND)
    try:
        time.sleep(2)  # load before the move
        moved_at = time.monotonic()
        service_update(cluster, *update, task["name"])
        back = rejoined(yard, stack, task["id"], new_address)
        wait_for(f"{task['name']} healthy and routed at {new_address}", back, timeout=120)
    finally:
        result = load.stop()
        poller.stop()
    left, joined = routed_only_once_healthy(poller, old_address, new_address)
    print(
        f"\n{stack}: {old_address} left the route {left - moved_at:.1f} s after "
        f"the update, {new_address} joined after {joined - moved_at:.1f} s; wrk: "
        f"{result.requests} requests, {result.errors} failed ({result.read} cut off)"
    )
    assert result.requests > 0
    assert result.errors == result.read <= LOAD_CONNECTIONS, result.raw


def test_a_task_swarm_reschedules_leaves_the_route_and_rejoins_only_once_healthy_there(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    # spread: none: Swarm picks the node and the task binds 0.0.0.0, so an operator's
    # `docker service update` can move it (a pinned task's node.id constraint holds it).
    repo = new_stack(yard, tmp_path, "mover", replicas=2, extra="    placement: {spread: none}\n")
    repo.write("Dockerfile", LATE_HEALTH_DOCKERFILE)
    repo.commit("health passes 3 s after each start")
    ship(yard, "mover")
    converged(yard, "mover")
    before = tasks(yard, "mover")
    moved = before[0]
    ids = swarm_cluster.node_ids()
    names = {v: k for k, v in ids.items()}
    there = next(n for n in ("n2", "n3", "n1") if ids[n] != moved["node"])
    old_address = moved["address"]
    new_address = f"{swarm_cluster.nodes[there].address}:{old_address.rsplit(':', 1)[1]}"
    assert set(upstreams(yard, "mover")) == {t["address"] for t in before}
    # The operator moves it: Swarm's default update order stops the old task first.
    moved_under_load(
        yard,
        swarm_cluster,
        "mover",
        moved,
        new_address,
        "--constraint-add",
        f"node.id=={ids[there]}",
    )
    state = converged(yard, "mover")
    assert all(t["match"] for t in state["tasks"])
    after = tasks(yard, "mover")
    assert [t["health"] for t in after] == ["healthy", "healthy"], after
    assert names[next(t for t in after if t["id"] == moved["id"])["node"]] == there
    assert sorted(upstreams(yard, "mover")) == sorted(t["address"] for t in after)
    platform_id = (yard.data_dir / "platform-id").read_text().strip()
    client = swarm_cluster.manager.client()
    try:
        services = client.services.list(
            filters={
                "label": [f"dev.stackyard.platform={platform_id}", "dev.stackyard.stack=mover"]
            }
        )
        assert sorted(s.name for s in services) == sorted(t["name"] for t in after)
    finally:
        client.close()


def test_a_start_first_move_routes_the_new_address_only_once_healthy_there_and_keeps_the_task(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    """An operator moves a pinned task start-first: Swarm runs the new one (bound to the new
    node's address: the nodes share the loopback) next to the old one, then stops the old.
    The task keeps its id, is not replaced, and its new address is routed only once its
    /healthz passed there (the app answers 404 for its first 3 s). Under load."""
    repo = new_stack(yard, tmp_path, "leaper", replicas=2)
    repo.write("Dockerfile", LATE_HEALTH_DOCKERFILE)
    repo.commit("health passes 3 s after each start")
    ship(yard, "leaper")
    converged(yard, "leaper")
    before = tasks(yard, "leaper")
    moved = before[0]
    ids = swarm_cluster.node_ids()
    names = {v: k for k, v in ids.items()}
    held = {t["node"] for t in before}
    there = next(n for n in ("n3", "n2", "n1") if ids[n] not in held)
    node = swarm_cluster.nodes[there].address
    new_address = f"{node}:{moved['address'].rsplit(':', 1)[1]}"
    client = swarm_cluster.manager.client()
    try:
        spec = client.services.get(moved["id"]).attrs["Spec"]
    finally:
        client.close()
    pinned = next(
        c for c in spec["TaskTemplate"]["Placement"]["Constraints"] if c.startswith("node.id")
    )
    # Swarm stops the old task once the new one runs: at most a response in flight there.
    moved_under_load(
        yard, swarm_cluster, "leaper", moved, new_address, "--update-order", "start-first",
        "--constraint-rm", pinned, "--constraint-add", f"node.id=={ids[there]}",
        "--env-add", f"HOST={node}",
    )  # fmt: skip
    # The same two tasks, neither replaced nor counted as failed; the moved one on its node.
    after = tasks(yard, "leaper")
    assert {t["id"] for t in after} == {t["id"] for t in before}, after
    assert all(d["status"] == "COMPLETED" for d in deployments(yard, "leaper"))
    assert [t["health"] for t in after] == ["healthy", "healthy"], after
    assert names[next(t for t in after if t["id"] == moved["id"])["node"]] == there
    state = converged(yard, "leaper")
    assert all(t["match"] for t in state["tasks"])
    assert sorted(upstreams(yard, "leaper")) == sorted(t["address"] for t in after)


def service_update(cluster: SwarmCluster, *args: str) -> None:
    """An operator's `docker service update` of one of the platform's services."""
    subprocess.run(
        ["docker", "-H", cluster.endpoint, "service", "update", "--detach", *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_move_no_node_can_take_waits_saying_why_the_stage_serves_on_and_undoing_it_recovers(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    new_stack(yard, tmp_path, "astray", replicas=2)
    ship(yard, "astray")
    converged(yard, "astray")
    moved, kept = tasks(yard, "astray")
    nowhere = "node.labels.dev.stackyard.test-nowhere==yes"  # no node has the label

    def waiting() -> Any:
        found = {t["id"]: t for t in tasks(yard, "astray")}
        task = found.get(moved["id"])
        return (
            task is not None
            and task["state"] == "moving"
            and upstreams(yard, "astray") == [kept["address"]]
            and task
        )

    load = stage_load(stage_url(yard, "astray"), seconds=LOAD_BOUND, connections=LOAD_CONNECTIONS)
    try:
        # The operator moves a task where no node fits: Swarm stops it, keeps the new one
        # pending. The task waits (it is the operator's to undo), the other one serves.
        service_update(swarm_cluster, "--constraint-add", nowhere, moved["name"])
        task = wait_for(f"{moved['name']} moving, out of the route", waiting, timeout=60)
    finally:
        result = load.stop()
    assert task["error"].startswith("waits for a node: no suitable node"), task
    assert nowhere in task["error"]
    assert result.requests > 0
    assert result.errors == result.read <= LOAD_CONNECTIONS, result.raw
    # Not replaced meanwhile, not counted as failed; tasks and check say what it waits for.
    assert {t["id"] for t in tasks(yard, "astray")} == {moved["id"], kept["id"]}
    assert all(d["status"] == "COMPLETED" for d in deployments(yard, "astray"))
    state = check(yard, "astray")
    assert not state["converged"]
    assert state["waiting"] == [f"{moved['name']} moving: {task['error']}"]
    said = yard.cli("check", "astray", "--stage", "dev", check=False)
    assert "not converged: 1 of 2 task(s) running" in said.stderr
    assert f"task {moved['name']} moving: waits for a node: no suitable node" in said.stderr
    assert (
        "waits for a node: no suitable node" in yard.cli("tasks", "astray", "--stage", "dev").stdout
    )
    # The operator undoes the move: the task runs on its node again, healthy, routed.
    service_update(swarm_cluster, "--constraint-rm", nowhere, moved["name"])
    state = converged(yard, "astray")
    assert {t["id"] for t in state["tasks"]} == {moved["id"], kept["id"]}
    wait_for(
        "both tasks routed",
        lambda: (
            sorted(upstreams(yard, "astray")) == sorted(t["address"] for t in tasks(yard, "astray"))
        ),
    )
    assert served_version(stage_url(yard, "astray")) == "v1"


BUILD_YML = """\
version: 0.2
phases:
  build:
    commands:
      - docker service ls 2>&1 || true
      - docker build --network host -t "$IMAGE_URL:$COMMIT_SHA" .
  post_build:
    commands:
      - docker push "$IMAGE_URL:$COMMIT_SHA"
"""


def test_a_build_yml_builds_on_the_platform_machine_and_its_digest_runs_on_the_swarm(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    repo = new_stack(yard, tmp_path, "specced", replicas=2)
    repo.write("build.yml", BUILD_YML)
    sha = repo.commit("a build spec")
    built = json.loads(yard.cli("build", "specced", "--json", timeout=300).stdout)
    assert (built["status"], built["kind"]) == ("SUCCEEDED", "buildspec"), built
    log = Path(built["log_path"]).read_text(encoding="utf-8")
    # Its docker reached the build proxy, which keeps it off any swarm API ...
    assert "Stackyard's build proxy refused" in log, log
    # ... and built on the platform machine's own engine (the swarm's nodes have no base
    # images), which keeps the image; the nodes pull the pushed digest from the registry.
    local = docker.from_env()
    try:
        image = local.images.get(f"{yard.registry}/specced:{sha}")
    finally:
        local.close()
    assert f"{yard.registry}/specced@{built['digest']}" in image.attrs["RepoDigests"]
    yard.cli("release", "specced", "--stage", "dev")
    assert deploy(yard, "specced")["status"] == "COMPLETED"
    state = converged(yard, "specced")
    assert state["digest"] == built["digest"]
    assert [t["match"] for t in state["tasks"]] == [True, True]
    ids = set(swarm_cluster.node_ids().values())
    assert {t["node"] for t in state["tasks"]} <= ids
    assert len({t["node"] for t in state["tasks"]}) == 2  # spread over two nodes
    assert served_version(stage_url(yard, "specced")) == "v1"
