"""A swarm as a target: the platform runs on the machine's Docker engine, and a stage with
``target: eu`` runs on the real three-node test swarm (issue 13's ``targets add eu --swarm``).
Its tasks spread over the nodes, and ``stackyard nodes --target eu`` lists, drains (under load,
no request failed) and activates that swarm's nodes, as ``stackyard nodes`` does for a
platform on a swarm.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import RunningPlatform, start_platform
from tests.integration.swarm.cluster import (
    check,
    converged,
    delete_stacks,
    new_stack,
    ship,
    stage_load,
    stage_url,
    stop_swarm_platform,
    tasks,
    wait_for,
)
from tests.integration.swarm.conftest import SwarmCluster

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

LOAD_BOUND = 300  # seconds: no load outlives this; it stops once the drain is done


@pytest.fixture(scope="module")
def yard(
    tmp_path_factory: pytest.TempPathFactory, swarm_cluster: SwarmCluster
) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("swarm-target") / "data")
    try:
        running.cli("targets", "add", "eu", "--swarm", swarm_cluster.endpoint, "--region", "eu")
        yield running
    finally:
        try:
            delete_stacks(running)
        finally:
            stop_swarm_platform(running, swarm_cluster)


def eu_nodes(yard: RunningPlatform) -> list[Any]:
    return list(json.loads(yard.cli("nodes", "--target", "eu", "--json").stdout))


def three(yard: RunningPlatform) -> list[Any]:
    running = tasks(yard, "regional")
    return running if len(running) == 3 else []


def test_a_stage_on_a_swarm_target_spreads_and_its_nodes_drain_through_the_target(
    yard: RunningPlatform, tmp_path: Path, swarm_cluster: SwarmCluster
) -> None:
    new_stack(yard, tmp_path, "regional", replicas=3, extra="    target: eu\n")
    record = ship(yard, "regional")
    assert record["status"] == "COMPLETED", record
    converged(yard, "regional")
    names = {node_id: name for name, node_id in swarm_cluster.node_ids().items()}
    assert sorted(names[t["node"]] for t in tasks(yard, "regional")) == ["n1", "n2", "n3"]
    # The stack's stages at a glance: on target eu, three healthy tasks, its URL.
    (summary,) = json.loads(yard.cli("stages", "list", "regional", "--json").stdout)["stages"]
    assert (summary["stage"], summary["target"], summary["healthy"]) == ("dev", "eu", 3)
    assert summary["url"] == stage_url(yard, "regional")
    shown = yard.cli("stacks", "show", "regional").stdout.splitlines()
    assert shown[-1].split()[:5] == ["dev", "eu", "1", summary["digest"][:19], "3/3"]

    # The platform's own engine has no nodes; the target's swarm has three, one task each.
    plain = yard.cli("nodes", check=False)
    assert plain.returncode != 0
    assert "does not support nodes" in plain.stderr
    listed = {n["address"]: n for n in eu_nodes(yard)}
    assert set(listed) == {node.address for node in swarm_cluster.nodes.values()}
    assert all(n["tasks"] == 1 for n in listed.values()), listed

    unknown = yard.cli("nodes", "drain", "no-such-node", "--target", "eu", check=False)
    assert unknown.returncode != 0
    assert "no node 'no-such-node' in target eu's cluster" in unknown.stderr
    assert "stackyard nodes --target eu" in unknown.stderr

    # A worker (see test_swarm_cluster's drain): its task moves with no request failed,
    # and the controller finishes the drain on the target's engine.
    victim = swarm_cluster.nodes["n3"].address
    load = stage_load(stage_url(yard, "regional"), seconds=LOAD_BOUND)
    try:
        yard.cli("nodes", "drain", victim, "--target", "eu", timeout=180)
    finally:
        result = load.stop()
    try:
        assert result.requests > 0
        assert result.errors == 0, result.raw
        drained = next(n for n in eu_nodes(yard) if n["address"] == victim)
        assert (drained["availability"], drained["draining"], drained["tasks"]) == (
            "drain",
            False,
            0,
        )
        # The drain ends once no task is meant to run there; the old one may still be
        # within its stop timeout.
        running = wait_for("the moved task's old one gone", lambda: three(yard))
        assert "n3" not in {names[t["node"]] for t in running}
        assert check(yard, "regional")["converged"]
    finally:
        yard.cli("nodes", "activate", victim, "--target", "eu")
    assert next(n for n in eu_nodes(yard) if n["address"] == victim)["availability"] == "active"
