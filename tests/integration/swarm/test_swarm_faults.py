"""What happens only on a cluster, for real: a node SIGKILLed under load, and the control
plane SIGKILLed in the middle of a deployment on the swarm.

Each test has its own platform (a dead node or a dead control plane must not leak into
another test's stages) and restores what it broke: the killed node is started again and
rejoins the swarm. The recovery times are printed (``pytest -s``) for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import STACKYARD, cli_env, free_port
from tests.integration.swarm.cluster import (
    build_and_release,
    check,
    converged,
    deployments,
    new_stack,
    served_version,
    ship,
    stage_load,
    stage_url,
    stop_swarm_platform,
    swarm_platform,
    tasks,
    wait_for,
)
from tests.integration.swarm.conftest import SwarmCluster

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

LOAD_CONNECTIONS = 8
LOAD_BOUND = 400  # seconds: no load outlives this; it stops once the stage settled


def test_a_node_killed_under_load_fails_no_request_and_its_tasks_come_back_elsewhere(
    tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    yard = swarm_platform(tmp_path / "data", swarm_cluster)
    try:
        new_stack(yard, tmp_path, "survivor", replicas=2)
        ship(yard, "survivor")
        converged(yard, "survivor")
        names = {node_id: name for name, node_id in swarm_cluster.node_ids().items()}
        placed = sorted(names[t["node"]] for t in tasks(yard, "survivor"))
        assert len(set(placed)) == 2, placed  # two replicas, two nodes
        victim = next(name for name in placed if name != "n1")  # never the manager
        victim_id = swarm_cluster.node_ids()[victim]
        load = stage_load(
            stage_url(yard, "survivor"), seconds=LOAD_BOUND, connections=LOAD_CONNECTIONS
        )
        try:
            time.sleep(3)  # load before the kill
            killed_at = swarm_cluster.kill(victim)

            def healthy_elsewhere() -> bool:
                found = tasks(yard, "survivor")
                good = [
                    t
                    for t in found
                    if t["health"] == "healthy" and t["state"] == "running"
                    and t["node"] != victim_id
                ]  # fmt: skip
                return len(good) == 2

            wait_for("2 healthy tasks on the surviving nodes", healthy_elsewhere, timeout=120)
            recovered = time.monotonic() - killed_at

            def node_down() -> bool:
                listed = json.loads(yard.cli("nodes", "--json").stdout)
                return any(n["id"] == victim_id and n["state"] == "down" for n in listed)

            wait_for(f"Swarm says {victim} is down", node_down, timeout=120)
            detected = time.monotonic() - killed_at
            wait_for(
                "2 running tasks, none on the dead node",
                lambda: (
                    (state := check(yard, "survivor"))["converged"]
                    and all(t["node"] != victim_id for t in state["tasks"])
                ),
                timeout=120,
            )
            settled = time.monotonic() - killed_at
        finally:
            result = load.stop()
        print(
            f"\nnode loss: back to 2 healthy tasks {recovered:.1f} s after the SIGKILL; "
            f"Swarm marked the node down after {detected:.1f} s; converged after "
            f"{settled:.1f} s; wrk: {result.requests} requests, {result.errors} failed"
        )
        assert result.requests > 0
        # A request in flight on the node when it died fails (its response was cut off while
        # Caddy streamed it: a read error at the client, at most one per connection); every
        # other request must succeed: refused connections are retried on the other upstream
        # and the dead tasks leave the route. The goal of 0 is not met for requests
        # in flight (see docs/benchmarks.md, node loss).
        assert result.errors == result.read <= LOAD_CONNECTIONS, result.raw
        events = json.loads(yard.cli("deployments", "survivor", "--stage", "dev", "--json").stdout)
        assert isinstance(events, list)
        listed = yard.cli("deployments", "survivor", "--stage", "dev").stdout
        assert f"({swarm_cluster.nodes[victim].address}) is down" in listed, listed
        assert served_version(stage_url(yard, "survivor")) == "v1"
    finally:
        try:
            stop_swarm_platform(yard, swarm_cluster)
        finally:
            swarm_cluster.restore()


def test_the_control_plane_killed_mid_deployment_adopts_its_services_and_leaves_no_orphan(
    tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    yard = swarm_platform(tmp_path / "data", swarm_cluster)
    try:
        repo = new_stack(yard, tmp_path, "phoenix", replicas=2)
        ship(yard, "phoenix")
        repo.set_version("v2")
        build_and_release(yard, "phoenix")
        yard.cli("deploy", "phoenix", "--stage", "dev", "--detach")
        wait_for(
            "a task of release 2 started",
            lambda: any(t["release"] == "2" for t in tasks(yard, "phoenix")),
            timeout=60,
        )
        subprocess.run(["kill", "-9", str(yard.pid)], check=True)
        restarted = yard.cli(
            "up", "-d", "--json",
            "--engine", "swarm", "--engine-endpoint", swarm_cluster.endpoint,
            "--api-port", yard.api_url.rsplit(":", 1)[1],
            "--registry-port", yard.registry.rsplit(":", 1)[1],
            timeout=120,
        )  # fmt: skip
        assert json.loads(restarted.stdout)["status"] == "started"
        state = converged(yard, "phoenix", timeout=180)
        record = deployments(yard, "phoenix")[0]
        assert (record["number"], record["status"]) == (2, "COMPLETED"), record
        assert {t["digest"] for t in state["tasks"]} == {state["digest"]}
        assert served_version(stage_url(yard, "phoenix")) == "v2"
        platform_id = (yard.data_dir / "platform-id").read_text().strip()
        client = swarm_cluster.manager.client()
        try:
            services = client.services.list(
                filters={"label": f"dev.stackyard.platform={platform_id}"}
            )
            names = sorted(s.name for s in services)
        finally:
            client.close()
        assert names == sorted(t["name"] for t in tasks(yard, "phoenix")), names
        assert len(names) == 2
    finally:
        stop_swarm_platform(yard, swarm_cluster)


def test_tasks_a_deletion_left_while_the_manager_was_frozen_go_once_it_answers(
    tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    """A stack deleted while the swarm manager does not answer (here: its dockerd stopped
    with SIGSTOP for the length of the deletion) is deleted, and its tasks are left
    running, said so; the platform removes them once the manager answers again."""
    yard = swarm_platform(tmp_path / "data", swarm_cluster)
    platform_id = (yard.data_dir / "platform-id").read_text().strip()
    labels = [f"dev.stackyard.platform={platform_id}", "dev.stackyard.stack=leftover"]

    def services() -> list[str]:
        client = swarm_cluster.manager.client()
        try:
            return [s.name for s in client.services.list(filters={"label": labels})]
        finally:
            client.close()

    try:
        new_stack(yard, tmp_path, "leftover", replicas=2)
        ship(yard, "leftover")
        converged(yard, "leftover")
        manager = swarm_cluster.manager.pid()
        assert manager is not None
        os.kill(manager, signal.SIGSTOP)
        try:
            deleted = yard.cli("stacks", "delete", "leftover", "--yes", timeout=120)
        finally:
            os.kill(manager, signal.SIGCONT)
        assert "Deleted stack leftover." in deleted.stdout
        assert "Left its tasks and routes: " in deleted.stdout, deleted.stdout
        assert "The platform removes the tasks and routes left once" in deleted.stdout
        assert len(services()) == 2  # still there: the manager did not answer
        began = time.monotonic()
        wait_for("the deleted stack's services removed", lambda: not services(), timeout=180)
        print(f"\nleft tasks removed {time.monotonic() - began:.1f} s after the manager answered")
    finally:
        stop_swarm_platform(yard, swarm_cluster)


def test_up_on_an_engine_that_is_no_swarm_manager_stops_naming_docker_swarm_init(
    tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    worker = swarm_cluster.nodes["n2"].socket
    argv = [*STACKYARD, "up", "-d", "--engine", "swarm", "--engine-endpoint", worker]
    for flag in ("--api-port", "--registry-port"):
        argv += [flag, str(free_port())]
    env = cli_env(tmp_path / "data")
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run([*STACKYARD, "down", "--all"], env=env, capture_output=True, timeout=60)
    assert result.returncode != 0, result.stdout
    said = result.stdout + result.stderr
    assert "is a swarm worker, not a swarm manager" in said, said
    assert "docker swarm init" in said, said
    assert not (tmp_path / "data" / "platform.json").exists()
