"""Helpers for the cluster tests: a platform on the test swarm, stacks with fast checks, load.

The platform runs with ``--engine swarm`` and the manager's socket as its engine endpoint;
its registry binds 127.0.0.1, which every node of the loopback swarm reaches. Each test
deploys its own stack; tasks are small (``cpu: 0.1``) so that rollouts fit the nodes'
reservations.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import RunningPlatform, start_platform, stop_platform
from tests.integration.gitrepo import GitRepo
from tests.integration.swarm.conftest import SwarmCluster
from tests.integration.wrk import Load

STAGE = """\
stages:
  - name: {stage}
    replicas: {replicas}
    cpu: 0.1
    memory: 64m
    health: {{path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 5}}
    deploy: {{drain_seconds: 1, stop_timeout: 3}}
{extra}"""


def swarm_platform(data_dir: Path, cluster: SwarmCluster, *more: str) -> RunningPlatform:
    return start_platform(
        data_dir, up_args=["--engine", "swarm", "--engine-endpoint", cluster.endpoint, *more]
    )


def delete_stacks(running: RunningPlatform) -> None:
    """Delete every stack of the platform, and so its tasks on the swarm: the swarm is
    shared with the other modules' stages, and a module that kept its stages running
    filled n1's cpu reservations ("insufficient resources on 1 node" in a later test)."""
    for stack in json.loads(running.cli("stacks", "list", "--json").stdout):
        running.cli("stacks", "delete", stack["name"], "--yes", timeout=180)


def stop_swarm_platform(running: RunningPlatform, cluster: SwarmCluster) -> None:
    """``stop_platform``, then remove the services and secrets the platform leaves on the
    swarm (by its label): the next test session starts from a clean cluster."""
    stop_platform(running)
    id_file = running.data_dir / "platform-id"
    if not id_file.exists():
        return
    label = f"dev.stackyard.platform={id_file.read_text().strip()}"
    client = cluster.manager.client()
    try:
        for service in client.services.list(filters={"label": label}):
            service.remove()
        for secret in client.secrets.list(filters={"label": label}):
            secret.remove()
    finally:
        client.close()


def new_stack(
    yard: RunningPlatform,
    where: Path,
    name: str,
    *,
    replicas: int = 1,
    stage: str = "dev",
    extra: str = "",
) -> GitRepo:
    repo = GitRepo.from_example("hello", where / name)
    repo.write("stackyard.yml", STAGE.format(stage=stage, replicas=replicas, extra=extra))
    repo.commit("fast health checks, small tasks")
    yard.cli("stacks", "create", name, "--repo", str(repo.path))
    return repo


def build_and_release(yard: RunningPlatform, stack: str, stage: str = "dev") -> None:
    yard.cli("build", stack, timeout=300)
    yard.cli("release", stack, "--stage", stage)


def deploy(yard: RunningPlatform, stack: str, stage: str = "dev", *, ok: bool = True) -> Any:
    result = yard.cli("deploy", stack, "--stage", stage, "--json", check=ok, timeout=300)
    if ok:
        return json.loads(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    return deployments(yard, stack, stage)[0]


def ship(yard: RunningPlatform, stack: str, stage: str = "dev") -> Any:
    build_and_release(yard, stack, stage)
    return deploy(yard, stack, stage)


def deployments(yard: RunningPlatform, stack: str, stage: str = "dev") -> list[Any]:
    found = yard.cli("deployments", stack, "--stage", stage, "--json").stdout
    return list(json.loads(found))


def tasks(yard: RunningPlatform, stack: str, stage: str = "dev") -> list[Any]:
    return list(json.loads(yard.cli("tasks", stack, "--stage", stage, "--json").stdout))


def check(yard: RunningPlatform, stack: str, stage: str = "dev") -> Any:
    return json.loads(yard.cli("check", stack, "--stage", stage, "--json").stdout)


def nodes(yard: RunningPlatform) -> list[Any]:
    return list(json.loads(yard.cli("nodes", "--json").stdout))


def stage_url(yard: RunningPlatform, stack: str, stage: str = "dev") -> str:
    return str(json.loads(yard.cli("url", stack, "--stage", stage, "--json").stdout)["url"])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120) -> Any:
    """``probe()`` until it returns something true; AssertionError naming ``what`` after
    ``timeout`` seconds (generous: the machine is shared and slow at times)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {found!r})")
        time.sleep(0.5)


def converged(yard: RunningPlatform, stack: str, stage: str = "dev", timeout: float = 120) -> Any:
    last: list[Any] = []

    def probe() -> Any:
        last[:] = [check(yard, stack, stage)]
        return last[0]["converged"] and last[0]

    try:
        return wait_for(f"{stack}/{stage} converged", probe, timeout)
    except AssertionError as exc:  # say what check and the tasks show
        shown = json.dumps({"check": last, "tasks": tasks(yard, stack, stage)}, indent=1)
        raise AssertionError(f"{exc}\n{shown}") from None


def served_version(url: str) -> str:
    text = httpx.get(url + "/", timeout=5).text
    match = re.search(r"VERSION=(\w+)", text)
    return match.group(1) if match else text


LOAD_TAIL = 2.0  # seconds of load after the work a test loads, before it stops


def stage_load(url: str, seconds: int, connections: int = 8) -> Load:
    """``wrk`` against a stage for at most ``seconds`` (a bound for a slow machine, not the
    time a test loads for): ``stop()`` ends it ``LOAD_TAIL`` seconds after the work it
    loads is done. A request waits up to 10 s (a task moving on a busy machine)."""
    return Load(url + "/", seconds, connections=connections, timeout=10, tail=LOAD_TAIL)


def upstreams(yard: RunningPlatform, stack: str, stage: str = "dev") -> list[str]:
    """The addresses the router sends the stage's traffic to, as the keeper last applied them."""
    table = json.loads((yard.data_dir / "run" / "upstreams.json").read_text())["routes"]
    return list(table.get(f"{stack}-{stage}") or [])
