"""Stages on their targets' engines: dev (local) -> prod-eu -> prod-us from one git push.

Two targets, each a Docker engine of its own (an extra dockerd per target, started for
this module: tests/integration/extra_engine.py) pulling from a registry of its own (a real
token registry each). One ``git push`` runs the pipeline through the three stages; the
same digest ends up in the platform's registry and in both targets' registries, ``check``
matches on every stage, and each stage's task runs on its target's engine (asked there
directly, and absent from the others). Meanwhile a deploy of a stage on a target whose
engine socket does not exist is refused naming the target, holds up nothing else, and
leaves that target unfollowed (no watch). A second push and ``prune``
(one release kept per stage) delete the first image's copies in the targets' registries
and keep the second's; a rollback to it is then refused. A restart removes orphan tasks
from every target's engine. A deploy to a target at an address that accepts and never
answers, or where nothing listens, or whose engine (docker or swarm) hangs on a listing
after its ping, is refused within its check.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest

from stackyard.engines.base import LABEL_PLATFORM, LABEL_STACK, LABEL_STAGE
from stackyard.errors import NotFoundError
from stackyard.images.registry import RegistryClient
from stackyard.platform.credentials import ensure_registry_login

from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .extra_engine import ExtraEngine, extra_engine
from .gitrepo import GitRepo
from .mute import EMPTY_LISTINGS, closed_endpoint, mute_endpoint, ping_only_endpoint
from .test_pipelines import wait_run
from .token_registry import TokenRegistry, token_registry

pytestmark = pytest.mark.integration

FAST = (
    "    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}\n"
    "    deploy: {drain_seconds: 0.5, stop_timeout: 3}\n"
)
STAGES = (
    "stages:\n"
    f"  - name: dev\n{FAST}"
    f"  - name: prod-eu\n    target: eu\n{FAST}"
    f"  - name: prod-us\n    target: us\n{FAST}"
)
LOST = f"stages:\n  - name: dev\n    target: gone\n{FAST}"
# Says where it runs on its output (the task log, read through its target's engine).
SAYS_WHERE = 'FROM busybox:latest\nCOPY www /www\nCMD ["sh", "-c", "echo up on $HOST:$PORT; ' + (
    'exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]\n'
)
GONE_SOCKET = "unix:///nonexistent/stackyard-gone.sock"


@pytest.fixture(scope="module")
def places(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[ExtraEngine, TokenRegistry]]]:
    """eu and us: an engine and a registry each."""
    root = tmp_path_factory.mktemp("targets")
    with (
        extra_engine("eu", root / "eu-engine") as eu_engine,
        token_registry(root / "eu-registry") as eu_registry,
        extra_engine("us", root / "us-engine") as us_engine,
        token_registry(root / "us-registry") as us_registry,
    ):
        yield {"eu": (eu_engine, eu_registry), "us": (us_engine, us_registry)}


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    # One release kept per stage: a second push makes the first one's copies old.
    running = start_platform(
        tmp_path_factory.mktemp("spread") / "data", up_args=("--keep-releases", "1")
    )
    try:
        yield running
    finally:
        stop_platform(running)


def add_registry(yard: RunningPlatform, name: str, registry: TokenRegistry) -> None:
    subprocess.run(
        [*STACKYARD, "registries", "add", name, "--url", f"{registry.endpoint}/acme",
         "--username", registry.username, "--password-stdin"],
        input=registry.password + "\n", env=yard.env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip


def containers(client: docker.DockerClient, platform: str, stack: str) -> list[dict[str, Any]]:
    """The platform's running containers of ``stack`` on that engine: stage and image."""
    found = client.containers.list(
        filters={"label": [f"{LABEL_PLATFORM}={platform}", f"{LABEL_STACK}={stack}"]}
    )
    return [{"stage": c.labels[LABEL_STAGE], "image": c.attrs["Config"]["Image"]} for c in found]


def test_one_push_runs_dev_then_prod_eu_then_prod_us_each_on_its_targets_engine(
    yard: RunningPlatform,
    places: dict[str, tuple[ExtraEngine, TokenRegistry]],
    tmp_path: Path,
) -> None:
    for name, (engine, registry) in places.items():
        add_registry(yard, f"{name}-registry", registry)
        yard.cli("targets", "add", name, "--docker", engine.endpoint,
                 "--registry", f"{name}-registry", "--region", f"{name}-1")  # fmt: skip
        checked = json.loads(yard.cli("targets", "check", name, "--json").stdout)
        assert checked["ok"], checked
    yard.cli("targets", "add", "gone", "--docker", GONE_SOCKET)

    # A stage on the target whose engine is not there: its deploy is refused, naming it.
    lost = GitRepo.from_example("hello", tmp_path / "lost")
    lost.write("stackyard.yml", LOST)
    lost.write("Dockerfile", SAYS_WHERE)
    lost.commit("dev runs on target gone")
    yard.cli("stacks", "create", "lost", "--repo", str(lost.path))
    yard.cli("build", "lost", timeout=300)
    yard.cli("release", "lost", "--stage", "dev")
    refused = yard.cli("deploy", "lost", "--stage", "dev", "--detach", check=False)
    assert refused.returncode != 0, refused
    assert "target gone: " in refused.stderr, refused.stderr
    assert "stackyard targets check gone" in refused.stderr, refused.stderr
    assert json.loads(yard.cli("deployments", "lost", "--stage", "dev", "--json").stdout) == []
    # doctor asks every target through the control plane: the two that answer pass, the
    # one whose engine is not there fails the run, named with its problem.
    doctor = yard.cli("doctor", "--json", check=False)
    assert doctor.returncode == 1, doctor.stdout
    (targets,) = [c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "targets"]
    assert targets["verdict"] == "fail", targets
    assert targets["summary"].startswith("1 of 3 target(s) cannot be used: gone: "), targets
    assert "stackyard targets check gone" in targets["fix"]

    repo = GitRepo.from_example("hello", tmp_path / "spread")
    repo.write("stackyard.yml", STAGES)
    repo.write("Dockerfile", SAYS_WHERE)
    repo.commit("dev here, prod-eu and prod-us on their targets")
    yard.cli("stacks", "create", "spread", "--repo", str(repo.path))
    pushed = repo.push(yard.cli("remote", "spread").stdout.strip())
    assert "pipeline run 1 started" in pushed
    done = wait_run(yard, "spread", 1, ("SUCCEEDED", "FAILED"), timeout=240)
    assert done["status"] == "SUCCEEDED", done

    # The same digest in the platform's registry and in each target's.
    digest = json.loads(yard.cli("releases", "spread", "--stage", "prod-us", "--json").stdout)[0][
        "digest"
    ]
    login = ensure_registry_login(yard.data_dir / "registry-credentials.json", yard.registry)
    with RegistryClient(yard.registry, username=login.username, password=login.password) as home:
        assert home.resolve("spread", "dev") == digest
    for name, (_engine, registry) in places.items():
        with RegistryClient(
            registry.endpoint, username=registry.username, password=registry.password
        ) as client:
            assert client.resolve("acme/spread", f"prod-{name}") == digest

    for stage in ("dev", "prod-eu", "prod-us"):
        state = json.loads(yard.cli("check", "spread", "--stage", stage, "--json").stdout)
        assert state["converged"], state
        assert state["digest"] == digest, state
        assert [t["match"] for t in state["tasks"]] == [True], state

    # Each stage's task is on its target's engine, pulled from its target's registry.
    platform = _platform_id(yard)
    main = docker.from_env()
    try:
        assert [c["stage"] for c in containers(main, platform, "spread")] == ["dev"]
    finally:
        main.close()
    for name, (engine, registry) in places.items():
        client = engine.client()
        try:
            assert containers(client, platform, "spread") == [
                {"stage": f"prod-{name}", "image": f"{registry.endpoint}/acme/spread@{digest}"}
            ]
        finally:
            client.close()
    (task,) = json.loads(yard.cli("tasks", "spread", "--stage", "prod-eu", "--json").stdout)
    assert task["digest"] == digest, task
    logs = yard.cli("logs", "spread", "--tasks", "--stage", "prod-eu").stdout
    assert f"up on 127.0.0.1:{task['port']}" in logs, logs

    # A second push: retention then deletes the first image's copies in the targets'
    # registries (one release kept per stage) and keeps the second's.
    repo.write("www/index.html", "v2\n")
    repo.commit("v2")
    subprocess.run(["git", "push", "stackyard", "main"], cwd=repo.path, capture_output=True,
                   timeout=120, check=True)  # fmt: skip
    done = wait_run(yard, "spread", 2, ("SUCCEEDED", "FAILED"), timeout=240)
    assert done["status"] == "SUCCEEDED", done
    second = json.loads(yard.cli("releases", "spread", "--stage", "prod-us", "--json").stdout)[0][
        "digest"
    ]
    assert second != digest
    pruned = json.loads(yard.cli("prune", "--json", timeout=300).stdout)
    assert pruned["errors"] == [], pruned
    for name, (_engine, registry) in places.items():
        assert f"{registry.endpoint}/acme/spread@{digest}" in pruned["manifests"], pruned
        with RegistryClient(
            registry.endpoint, username=registry.username, password=registry.password
        ) as client:
            with pytest.raises(NotFoundError):
                client.get_manifest("acme/spread", digest)
            assert client.resolve("acme/spread", f"prod-{name}") == second
    # A rollback of prod-eu to the first image, deleted everywhere now, is refused before
    # anything is copied or recorded; prod-eu goes on serving the second.
    refused = yard.cli("rollback", "spread", "--stage", "prod-eu", "--to", "1", check=False)
    assert refused.returncode == 1, refused.stdout
    said = " ".join(refused.stderr.split())
    assert f"release 1 of spread/prod-eu cannot be deployed: its image {digest}" in said, said
    released = json.loads(yard.cli("releases", "spread", "--stage", "prod-eu", "--json").stdout)
    assert [r["number"] for r in released] == [2, 1]
    state = json.loads(yard.cli("check", "spread", "--stage", "prod-eu", "--json").stdout)
    assert (state["digest"], state["converged"]) == (second, True), state

    yard.cli("stacks", "delete", "spread", "--yes")  # its tasks go from every engine
    for engine, _registry in places.values():
        client = engine.client()
        try:
            assert containers(client, platform, "spread") == []
        finally:
            client.close()

    # Tasks left on a target's engine by a stack that no longer exists (here: made by hand,
    # as a stack deleted while that engine was away would leave them) are removed when the
    # platform starts, on every target's engine, even one no stage runs on any more.
    eu_engine, eu_registry = places["eu"]
    image = f"{eu_registry.endpoint}/acme/spread@{second}"  # pulled there by prod-eu
    client = eu_engine.client()
    try:
        for stack in ("ghost", "lost"):  # "lost" exists: its task is not an orphan
            labels = {LABEL_PLATFORM: platform, LABEL_STACK: stack, LABEL_STAGE: "dev"}
            client.containers.run(image, ["sleep", "600"], labels=labels, network_mode="none",
                                  detach=True, name=f"orphan-test-{stack}")  # fmt: skip
        yard.cli("down")
        yard.up_again("--retention-interval", "0")
        until = time.monotonic() + 120
        while containers(client, platform, "ghost") and time.monotonic() < until:
            time.sleep(0.5)
        assert containers(client, platform, "ghost") == []
        assert [c["stage"] for c in containers(client, platform, "lost")] == ["dev"]
    finally:
        client.containers.get("orphan-test-lost").remove(force=True)
        client.close()

    # Target gone's engine never answered. A refused deploy follows nothing: no task watch
    # of it, so no warning of one (a watch's back-off and its one warning are unit-tested:
    # tests/unit/test_task_watch.py). The restart's orphan clean-up asked it, once.
    orphans = "target gone: could not look for orphan tasks"
    until = time.monotonic() + 60
    while orphans not in _platform_log(yard) and time.monotonic() < until:
        time.sleep(0.5)
    assert _platform_log(yard).count(orphans) == 1, _platform_log(yard)
    assert "cannot list target gone's engine's tasks" not in _platform_log(yard)


def test_a_deploy_to_a_target_that_never_answers_is_refused_within_its_check(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    # mute: a listener on 127.0.0.7 that accepts and never answers (an address that drops
    # packets holds a client the same way); shut: a port where nothing listens; hangs: an
    # engine that answers its ping and then never answers a listing (the task watch's first
    # call); tasks: a swarm manager that answers its ping, its nodes and services, and never
    # its tasks (the swarm watch's listing is all three). Each deploy and check must come
    # back within the CLI call's bound (the engine client's own timeout is 120 s: the old
    # check waited it out); the check's every call gives up after 10 s.
    answers = {end: EMPTY_LISTINGS[end] for end in ("nodes", "services")}
    with (
        mute_endpoint() as mute,
        ping_only_endpoint() as hangs,
        ping_only_endpoint(answers=answers) as tasks,
    ):
        # Each call below waits out its bounds, one target's independent of the others':
        # they go side by side, as four users' would.
        adds = {
            "mute": ("--docker", mute),
            "shut": ("--docker", closed_endpoint()),
            "hangs": ("--docker", hangs),
            "tasks": ("--swarm", tasks),
        }
        with ThreadPoolExecutor(max_workers=len(adds)) as pool:
            answered = pool.map(lambda name: yard.cli("targets", "add", name, *adds[name]), adds)
            added = dict(zip(adds, answered, strict=True))
        # Stored (an engine may come up later), and said at once, with how to check again.
        warned = " ".join(added["shut"].stderr.split())
        assert "warning: the Docker engine at tcp://" in warned, warned
        assert "check it again: stackyard targets check shut" in warned, warned
        names = tuple(adds)
        repo = GitRepo.from_example("hello", tmp_path / "quiet")
        repo.write("stackyard.yml", "stages:\n" + "".join(
            f"  - name: {name}\n    target: {name}\n{FAST}" for name in names))  # fmt: skip
        repo.commit("one stage on each target that does not answer")
        yard.cli("stacks", "create", "quiet", "--repo", str(repo.path))
        try:
            yard.cli("build", "quiet", timeout=300)
            for name in names:
                yard.cli("release", "quiet", "--stage", name)

            def refused_and_checked(name: str) -> None:
                refused = yard.cli(
                    "deploy", "quiet", "--stage", name, "--detach", check=False, timeout=60
                )
                assert refused.returncode != 0, refused
                said = " ".join(refused.stderr.split())
                who = "the swarm manager" if name == "tasks" else "the Docker engine"
                assert f"target {name}: {who} at tcp://" in said, said
                assert f"stackyard targets check {name}" in said, said
                if name == "tasks":
                    assert "(in GET /tasks, after it answered its ping)" in said, said
                    return  # its check is the same ping (the others show it)
                checked = yard.cli("targets", "check", name, "--json", check=False, timeout=60)
                assert checked.returncode == 1, checked
                engine = json.loads(checked.stdout)["engine"]
                assert "did not answer" in engine, engine
                assert engine.count(" at tcp://") == 1, engine  # the engine is named once
                if name == "hangs":
                    call = "(in GET /containers/json, after it answered its ping)"
                    assert call in said, said
                    assert call in engine, engine

            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                list(pool.map(refused_and_checked, names))
            for name in ("mute", "hangs", "tasks"):
                deployments = yard.cli("deployments", "quiet", "--stage", name, "--json")
                assert json.loads(deployments.stdout) == []
        finally:
            yard.cli("stacks", "delete", "quiet", "--yes")
            for name in names:
                yard.cli("targets", "remove", name, "--yes")


def test_a_stage_on_a_target_that_hangs_after_its_check_fails_naming_it_while_others_deploy(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    # stalls: a Docker engine that answers its ping and its containers' listing (the
    # deploy's check passes: the deployment is recorded and its stage's loop starts a
    # task), and then never answers anything else, from a start's look for its image on.
    # Each start gives up within its bound (10 s), the deployment fails at its circuit
    # breaker naming the target and the call; meanwhile dev, on local, deploys: the
    # controller runs each stage's loop on its own thread, not behind the one that waits.
    answers = {"containers/json": EMPTY_LISTINGS["containers/json"]}
    with ping_only_endpoint(answers=answers) as stalls:
        yard.cli("targets", "add", "stalls", "--docker", stalls)
        repo = GitRepo.from_example("hello", tmp_path / "stuck")
        repo.write("stackyard.yml", f"stages:\n  - name: dev\n{FAST}"
                   f"  - name: far\n    target: stalls\n{FAST}")  # fmt: skip
        repo.commit("dev here, far on a target that hangs")
        yard.cli("stacks", "create", "stuck", "--repo", str(repo.path))
        try:
            yard.cli("build", "stuck", timeout=300)
            for stage in ("dev", "far"):
                yard.cli("release", "stuck", "--stage", stage)
            asked = time.monotonic()
            yard.cli("deploy", "stuck", "--stage", "far", "--detach", timeout=60)
            yard.cli("deploy", "stuck", "--stage", "dev", "--detach", timeout=60)
            dev = _deployment_ended(yard, "stuck", "dev")
            assert dev["status"] == "COMPLETED", dev
            (far,) = _deployments(yard, "stuck", "far")
            assert far["status"] not in ("COMPLETED", "FAILED"), far  # still on its way
            far = _deployment_ended(yard, "stuck", "far")
            took = time.monotonic() - asked
            assert far["status"] == "FAILED", far
            said = " ".join(str(far["reason"]).split())
            assert f"target stalls: the Docker engine at {stalls} did not answer" in said, said
            assert "(in GET /events)" in said, said  # the watch's first call after the check
            assert took < 120, took  # three starts, each within its 10 s
        finally:
            yard.cli("stacks", "delete", "stuck", "--yes")
            yard.cli("targets", "remove", "stalls", "--yes")


def _deployments(yard: RunningPlatform, stack: str, stage: str) -> list[dict[str, Any]]:
    return list(json.loads(yard.cli("deployments", stack, "--stage", stage, "--json").stdout))


def _deployment_ended(yard: RunningPlatform, stack: str, stage: str) -> dict[str, Any]:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        (found,) = _deployments(yard, stack, stage)
        if found["status"] in ("COMPLETED", "FAILED"):
            return found
        time.sleep(0.5)
    raise AssertionError(f"the deployment of {stack}/{stage} did not end")


def _platform_log(yard: RunningPlatform) -> str:
    return (yard.data_dir / "logs" / "platform.log").read_text(errors="replace")


def _platform_id(yard: RunningPlatform) -> str:
    return (yard.data_dir / "platform-id").read_text().strip()
