"""Break-out attempts against a real platform: a hostile build.yml and a hostile app.

Each attempt must fail with a clear message in the build log (or the app's own report),
and the platform's state (another stack's images, tasks and secrets, the admin token)
must be unchanged afterwards. The platform runs with small build limits, so a fork bomb
and a disk fill end quickly; each is checked to be bounded before it is set off.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackyard.router.caddy import UnixSocketTransport

from .buildkit_budget import budget_value, kept_buildkit_budget
from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo
from .image_ids import copy_from_id
from .registry_fixtures import LiveRegistry, live_registry  # noqa: F401

pytestmark = pytest.mark.integration

BUILD_PIDS = 128
BUILD_DISK_MIB = 48
VICTIM_SECRET = "victim-secret-4d1f8e"
EVIL_SECRET = "evil-own-secret-9c2b71"
NET_RAW = 1 << 13


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    started = time.time() - 1  # the engine's clock and ours: the same host
    running = start_platform(
        tmp_path_factory.mktemp("isolation") / "data",
        up_args=[
            "--build-pids", str(BUILD_PIDS),
            "--build-memory", "512m",
            "--build-disk", f"{BUILD_DISK_MIB}m",
            "--build-cpus", "1",
        ],
    )  # fmt: skip
    try:
        yield running
    finally:
        subprocess.run(["docker", "rmi", EVIL_BASE], capture_output=True, timeout=60)
        stop_platform(running, images_since=started)


def set_secret(yard: RunningPlatform, stack: str, name: str, value: str) -> None:
    subprocess.run(
        [*STACKYARD, "secrets", "set", stack, name, "--json"],
        input=value, env=yard.env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def build(yard: RunningPlatform, stack: str) -> dict[str, Any]:
    result = yard.cli("build", stack, "--json", check=False, timeout=300)
    record: dict[str, Any] = json.loads(result.stdout)
    record["log"] = Path(record["log_path"]).read_text()
    return record


def registry_credentials(yard: RunningPlatform) -> tuple[str, str]:
    record = json.loads((yard.data_dir / "registry-credentials.json").read_text())
    return record["username"], record["password"]


def tag_digests(yard: RunningPlatform, stack: str) -> dict[str, str]:
    user, password = registry_credentials(yard)
    found = {}
    for tag in ("latest", "dev"):
        done = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--creds", f"{user}:{password}",
             f"docker://{yard.registry}/{stack}:{tag}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode == 0:
            found[tag] = json.loads(done.stdout)["Digest"]
    return found


def tasks_of(yard: RunningPlatform, stack: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=dev.stackyard.stack={stack}",
         "--filter", f"label=dev.stackyard.platform={platform_id(yard)}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip


def platform_id(yard: RunningPlatform) -> str:
    return (yard.data_dir / "platform-id").read_text().strip()


def build_containers(yard: RunningPlatform) -> list[str]:
    """The platform's build containers left after its builds (removed just after each)."""
    deadline = time.monotonic() + 20
    while (found := _build_containers(yard)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def _build_containers(yard: RunningPlatform) -> list[str]:
    names = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter",
         f"label=dev.stackyard.build-platform={platform_id(yard)}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    kept = ("sy-limits-", "sy-warm-")  # kept between builds: idle holders, the warm one
    return [name for name in names if not name.startswith(kept)]


def url_of(yard: RunningPlatform, stack: str) -> str:
    return str(json.loads(yard.cli("url", stack, "--stage", "dev", "--json").stdout)["url"])


def deploy_to_dev(yard: RunningPlatform, stack: str) -> None:
    yard.cli("release", stack, "--stage", "dev")
    deployment = json.loads(
        yard.cli("deploy", stack, "--stage", "dev", "--json", timeout=300).stdout
    )
    assert deployment["status"] == "COMPLETED", deployment


@pytest.fixture(scope="module")
def victim(yard: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Another stack, running in dev with a secret in its task's environment."""
    repo = GitRepo.from_example("hello", tmp_path_factory.mktemp("victim") / "victim")
    yard.cli("stacks", "create", "victim", "--repo", str(repo.path))
    set_secret(yard, "victim", "VICTIM_TOKEN", VICTIM_SECRET)
    assert build(yard, "victim")["status"] == "SUCCEEDED"
    deploy_to_dev(yard, "victim")
    return {"digests": tag_digests(yard, "victim"), "tasks": tasks_of(yard, "victim")}


PROXY_REFUSED = "Stackyard's build proxy refused the build:"
EVIL_BASE = f"evil-base-{secrets.token_hex(4)}"  # this run's own name, on a shared engine


def spec_of(*commands: str, env: str = "") -> str:
    """A build.yml whose build phase runs ``commands``."""
    listing = "".join(f"      - {json.dumps(c)}\n" for c in commands)
    return f"version: 0.2\n{env}phases:\n  build:\n    commands:\n{listing}"


def hostile_build_yml(yard: RunningPlatform, victim_task: str) -> str:
    data, api = yard.data_dir, yard.api_url
    commands = [
        f"cat {data}/admin-token || echo 'blocked: admin token'",
        f"cat {data}/secrets.key || echo 'blocked: secrets key'",
        f"head -c 64 {data}/stackyard.db || echo 'blocked: state database'",
        "cat /etc/shadow",
        "ls /var/lib/docker || echo 'blocked: engine data'",
        "docker run --rm -v /:/host busybox cat /host/etc/shadow || echo 'blocked: mount /'",
        "docker run --rm --privileged busybox true || echo 'blocked: privileged'",
        f"docker exec {victim_task} env || echo 'blocked: exec'",
        "docker service create --name evil busybox || echo 'blocked: service'",
        "docker tag busybox:latest $REGISTRY_ENDPOINT/victim:latest || echo 'blocked: tag'",
        "docker push $REGISTRY_ENDPOINT/victim:latest || echo 'blocked: push'",
        "docker build --network host -t $REGISTRY_ENDPOINT/victim:latest . "
        "|| echo 'blocked: build'",
        "docker pull $REGISTRY_ENDPOINT/victim:latest || echo 'blocked: pull'",
        f"docker tag {EVIL_BASE} busybox:latest || echo 'blocked: base image'",
        'echo "registry $(curl -s -o /dev/null -w "%{http_code}" -u "$REGISTRY_USERNAME:'
        '$REGISTRY_PASSWORD" http://$REGISTRY_ENDPOINT/v2/victim/tags/list)"',
        f'echo "api $(curl -s -o /dev/null -w "%{{http_code}}" {api}/api/v1/stacks)"',
        "grep -E 'CapEff|NoNewPrivs' /proc/self/status",
        'echo "secret=$EVIL."',
        "printf '%s' \"$EVIL\" | fold -w 5; echo",
        f"docker build --network host -t {EVIL_BASE} . && docker tag {EVIL_BASE} $IMAGE_URL:latest",
        "docker push $IMAGE_URL:latest",
    ]
    return spec_of(*commands, env="env:\n  secrets-manager:\n    EVIL: EVIL_SECRET\n")


def test_a_hostile_build_reaches_nothing_of_the_platform_the_host_or_another_stack(
    yard: RunningPlatform, victim: dict[str, Any], tmp_path: Path
) -> None:
    token_before = yard.token
    [victim_task] = victim["tasks"]
    repo = GitRepo.from_example("hello", tmp_path / "evil")
    repo.write("build.yml", hostile_build_yml(yard, victim_task))
    repo.commit("a hostile build spec")
    yard.cli("stacks", "create", "evil", "--repo", str(repo.path))
    set_secret(yard, "evil", "EVIL_SECRET", EVIL_SECRET)

    record = build(yard, "evil")
    log = record["log"]

    assert record["status"] == "SUCCEEDED", log  # what a build may do still works
    assert "Commands run in a build container of stackyard/build:bookworm" in log
    for what in ("admin token", "secrets key", "state database", "engine data"):
        assert f"blocked: {what}" in log
    assert log.count("No such file or directory") >= 4
    _, registry_password = registry_credentials(yard)
    secrets_key = (yard.data_dir / "secrets.key").read_bytes()
    host_shadow = Path("/etc/shadow").read_text()
    for leaked in (token_before, registry_password, VICTIM_SECRET, EVIL_SECRET, host_shadow):
        assert leaked not in log
    assert secrets_key.decode("ascii", "replace").strip() not in log
    refusals = [line for line in log.splitlines() if "Stackyard's build proxy refused" in line]
    for words in ("containers", "containers", "containers", "docker service create"):
        assert any(words in line for line in refusals), words
    assert sum("another stack's repository" in line for line in log.splitlines()) >= 3
    assert "refused to replace or remove busybox:latest" in log
    for what in ("mount /", "privileged", "exec", "service", "tag", "push", "build", "pull"):
        assert f"blocked: {what}" in log
    assert "registry 401" in log
    assert "api 401" in log
    capabilities = next(line for line in log.splitlines() if "CapEff:" in line)
    assert int(capabilities.split()[-1], 16) & NET_RAW == 0
    assert "NoNewPrivs:\t1" in log or "NoNewPrivs: 1" in log
    assert "secret=***." in log

    assert tag_digests(yard, "victim") == victim["digests"]
    assert tasks_of(yard, "victim") == victim["tasks"]
    assert "hello" in httpx.get(url_of(yard, "victim"), timeout=5).text
    assert yard.token == token_before
    assert build_containers(yard) == []
    swarm = subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
        capture_output=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    assert swarm == "inactive"


def test_a_buildkit_build_pushes_to_its_own_repository_and_nowhere_else(
    yard: RunningPlatform, victim: dict[str, Any], tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "kit")
    repo.write("Dockerfile.kit", "FROM busybox:latest\nRUN grep pids: /proc/self/cgroup\n")
    kit = "DOCKER_BUILDKIT=1 docker build --progress plain --network host -f Dockerfile.kit"
    victim_image = "$REGISTRY_ENDPOINT/victim:latest"
    repo.write(
        "build.yml",
        spec_of(
            f"{kit} --no-cache -t $IMAGE_URL:latest .",
            "docker push $IMAGE_URL:latest",
            f"{kit} -t {victim_image} . || echo 'blocked: kit tag'",
            f"{kit} --output type=image,name={victim_image},push=true . "
            "|| echo 'blocked: kit output'",
            f"{kit} --output type=local,dest=out . && ls out/bin/busybox",
            f'printf "FROM busybox:latest\\nCOPY --from={victim_image} / /v\\n" > D.steal && '
            "DOCKER_BUILDKIT=1 docker build --progress plain --network host -f D.steal . "
            "|| echo 'blocked: kit from'",
        ),
    )
    repo.commit("BuildKit")
    yard.cli("stacks", "create", "kit", "--repo", str(repo.path))

    with kept_buildkit_budget():
        record = build(yard, "kit")
        pids_max = budget_value("pids/docker/buildkit/pids.max")
    log = record["log"]

    assert record["status"] == "SUCCEEDED", log
    assert "pids:/docker/buildkit/" in log  # BuildKit's RUN steps run in its cgroup ...
    assert pids_max == str(BUILD_PIDS)  # ... which the proxy held to the build's limits
    assert tag_digests(yard, "kit")["latest"].startswith("sha256:")
    assert "another stack's repository" in log
    assert "blocked: kit tag" in log
    assert "refused docker build --output type=image" in log
    assert "blocked: kit output" in log
    assert "out/bin/busybox" in log
    # Its Dockerfile is read on the session: another stack's image is refused by its line.
    assert "error from sender: Stackyard's build proxy refused the build: D.steal line 2" in log
    assert "blocked: kit from" in log
    assert tag_digests(yard, "victim") == victim["digests"]
    assert build_containers(yard) == []


def push_base(registry: LiveRegistry, name: str, dockerfile: str, tmp_path: Path) -> None:
    """A base image in ``registry`` only: the engine does not hold it."""
    context = tmp_path / name.rsplit("/", 1)[-1].replace(":", "-")
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    registry.docker("build", "--network", "host", "-q", "-t", name, str(context))
    registry.docker("push", name)
    registry.docker("rmi", name)


def test_a_build_cannot_build_from_another_stack_s_local_image(
    yard: RunningPlatform,
    live_registry: LiveRegistry,  # noqa: F811 - a pytest fixture
    tmp_path: Path,
) -> None:
    """The engine holds another stack's image (built here; its content its own): a
    Dockerfile that names it by digest or id, as a base or a COPY source, or a base image
    the engine pulls whose ONBUILD trigger names it, is refused naming its line, and the
    stack's own build (from a pulled base with a harmless trigger, too) goes on."""
    hoard = GitRepo.from_example("hello", tmp_path / "hoard")
    hoard.write("www/secret.txt", secrets.token_hex(16))  # no other platform's image
    hoard.commit("a secret of its own")
    yard.cli("stacks", "create", "hoard", "--repo", str(hoard.path))
    assert build(yard, "hoard")["status"] == "SUCCEEDED"
    digests = tag_digests(yard, "hoard")
    image = f"{yard.registry}/hoard@{digests['latest']}"
    image_id = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", image],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    bases = f"{live_registry.endpoint}/bases"  # a registry the build logs in to
    trigger = f"ONBUILD COPY --from={copy_from_id(image_id)} /www /stolen"
    push_base(live_registry, f"{bases}/hostile:v1", f"FROM busybox:latest\n{trigger}\n", tmp_path)
    push_base(live_registry, f"{bases}/fine:v1", "FROM busybox\nONBUILD RUN touch /ran\n", tmp_path)
    dockerfiles = {
        "by digest": f"FROM $REGISTRY_ENDPOINT/hoard@{digests['latest']}",
        "by id": f"FROM {image_id}",
        "copy from": f"FROM busybox:latest\\nCOPY --from={copy_from_id(image_id)} /www /stolen",
        "pulled base": f"FROM {bases}/hostile:v1\\nRUN cat /stolen/index.html",
    }
    kit = "DOCKER_BUILDKIT=1 docker build --progress plain --network host"
    kit_dockerfiles = {  # the same rule on BuildKit's session-read Dockerfile (issue #16)
        "kit by id": f"FROM {image_id}",
        "kit copy from": f"FROM busybox:latest\\nCOPY --from={copy_from_id(image_id)} /www /stolen",
    }
    commands = [
        f"echo '{live_registry.password}' | docker login -u {live_registry.username} "
        f"--password-stdin {live_registry.endpoint}",
        *(f'printf "{text}\\n" > D{n} && docker build --network host -f D{n} . '
          f"|| echo 'blocked: {what}'"
          for n, (what, text) in enumerate(dockerfiles.items())),
        *(f'printf "{text}\\n" > K{n} && {kit} -f K{n} . || echo \'blocked: {what}\''
          for n, (what, text) in enumerate(kit_dockerfiles.items())),
        f'printf "FROM {bases}/fine:v1\\nRUN test -f /ran\\n" > Dfine',
        "docker build --network host --iidfile fine.id -f Dfine . "
        '&& echo "built: fine $(cat fine.id)"',
    ]  # fmt: skip
    repo = GitRepo.from_example("hello", tmp_path / "thief")
    repo.write("build.yml", spec_of(*commands, "docker build --network host -t $IMAGE_URL:latest .",
                                    "docker push $IMAGE_URL:latest"))  # fmt: skip
    repo.commit("builds from another stack's image")
    yard.cli("stacks", "create", "thief", "--repo", str(repo.path))

    record: dict[str, Any] = {}
    try:
        record = build(yard, "thief")
    finally:
        # What the test made, by id: the untagged image built on fine:v1 (its trigger's
        # step goes with it), then the bases the proxy pulled.
        made = re.findall(r"built: fine (sha256:[0-9a-f]{64})", record.get("log", ""))
        if made:
            subprocess.run(["docker", "rmi", *made], capture_output=True, timeout=120)
        subprocess.run(["docker", "rmi", "-f", f"{bases}/hostile:v1", f"{bases}/fine:v1"],
                       capture_output=True, timeout=120)  # fmt: skip
    log = record["log"]

    assert record["status"] == "SUCCEEDED", log  # its own build still goes through
    for n, what in enumerate(dockerfiles):
        said = [line for line in log.splitlines() if f"D{n}" in line or "blocked" in line]
        assert f"refused the build: D{n} line 1" in log or f"D{n} line 2" in log, (what, said)
        assert f"blocked: {what}" in log
    assert f"reads {image}" in log
    assert f"D3 line 1 (FROM {bases}/hostile:v1, whose image runs {trigger})" in log
    held = "the engine holds that image for another stack"
    lines = log.splitlines()
    assert sum(held in line for line in lines if "refused the build: D" in line) == 3
    for n, (what, text) in enumerate(kit_dockerfiles.items()):
        named = text.split("\\n")[-1]
        refused = f"error from sender: {PROXY_REFUSED} K{n} line {n + 1} ({named})"
        said = [line for line in lines if refused in line]
        assert said, what
        assert all(held in line for line in said), said
        assert f"blocked: {what}" in log
    assert made, "built: fine"
    left = subprocess.run(["docker", "image", "inspect", *made], capture_output=True, timeout=60)
    assert left.returncode != 0, "the test's own image was not removed"
    assert tag_digests(yard, "hoard") == digests


def warm_containers(yard: RunningPlatform, last_log: str) -> list[dict[str, Any]]:
    """The platform's warm build container (inspected), once the container of the last
    build (whose log, ``last_log``, names it) is removed: that one is removed after the
    build, in the background, and may still be listed for a moment."""
    deadline = time.monotonic() + 30
    while True:
        ids = subprocess.run(
            ["docker", "ps", "-q", "--filter", "name=^sy-warm-", "--filter",
             f"label=dev.stackyard.build-platform={platform_id(yard)}"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.split()  # fmt: skip
        ids = [found for found in ids if f"({found[:12]})" not in last_log]
        if ids or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not ids:
        return []
    inspected = subprocess.run(
        ["docker", "inspect", *ids], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(inspected.stdout))


def test_the_warm_build_container_holds_nothing_of_a_stack_and_serves_one_build(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "warmth")
    repo.write(
        "build.yml",
        spec_of(
            "echo built in $HOSTNAME",
            "docker build -q -t $IMAGE_URL:latest . && docker push -q $IMAGE_URL:latest",
        ),
    )
    repo.commit("a spec")
    yard.cli("stacks", "create", "warmth", "--repo", str(repo.path))
    set_secret(yard, "warmth", "WARMTH_SECRET", "warmth-secret-5e1c")
    first = build(yard, "warmth")
    assert first["status"] == "SUCCEEDED"  # builds now want a warm one

    [warm] = warm_containers(yard, first["log"])
    # Made for no stack: the image's variables only, empty directories, and a Docker API
    # that refuses everything, even to a command run inside it.
    assert not [v for v in warm["Config"]["Env"] if "WARMTH" in v or "REGISTRY" in v]
    mounts = {m["Destination"]: m["Source"] for m in warm["Mounts"]}
    for inside in ("/codebuild/output/src", "/codebuild/output/artifacts"):
        held = Path(mounts[inside])
        assert held.is_relative_to(yard.data_dir / "work" / "warm"), mounts
        assert list(held.iterdir()) == []
    tried = subprocess.run(
        ["docker", "exec", warm["Id"], "docker", "images"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert tried.returncode != 0
    assert "serves no build yet" in tried.stderr

    record = build(yard, "warmth")  # claims it, and never hands it to another build
    assert record["status"] == "SUCCEEDED", record["log"]
    assert f"built in {warm['Config']['Hostname']}" in record["log"]
    assert f"({warm['Id'][:12]})" in record["log"]
    [after] = warm_containers(yard, record["log"])
    assert after["Id"] != warm["Id"]
    assert build_containers(yard) == []


def test_a_stack_lowers_its_build_limits_and_cannot_raise_them(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "lowered")
    repo.write("stackyard.yml", "build: {cpu: 0.5, memory: 256m, pids_limit: 64}\n")
    repo.write("build.yml", spec_of("sleep 5", "exit 1"))
    repo.commit("lower limits")
    yard.cli("stacks", "create", "lowered", "--repo", str(repo.path))
    results: list[dict[str, Any]] = []
    building = threading.Thread(target=lambda: results.append(build(yard, "lowered")))
    building.start()
    deadline, found = time.monotonic() + 60, []
    while not found and building.is_alive() and time.monotonic() < deadline:
        found = subprocess.run(
            ["docker", "ps", "-q", "--filter", "name=^sy-build-lowered-", "--filter",
             f"label=dev.stackyard.build-platform={platform_id(yard)}"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.split()  # fmt: skip
        time.sleep(0.1)
    assert found, "no build container of the stack ran"
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{json .HostConfig}}", found[0]],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    building.join(timeout=120)
    host_config = json.loads(inspected.stdout)
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 256 * 1024**2
    assert host_config["MemorySwap"] == 256 * 1024**2
    assert host_config["PidsLimit"] == 64
    assert "build limits (stackyard.yml): 0.5 cores, 256 MiB, 64 processes" in results[0]["log"]

    repo.write("stackyard.yml", "build: {memory: 1g}\n")
    repo.commit("ask for more than the platform gives")
    record = build(yard, "lowered")
    assert record["status"] == "FAILED"
    assert (
        "stackyard.yml: build.memory asks for more than this platform's build limit of 512 MiB"
        in record["log"]
    )
    assert "stackyard up --build-memory" in record["log"]


def caddy_admin_config(socket_path: Path) -> Any:
    with httpx.Client(
        transport=UnixSocketTransport(socket_path), base_url="http://caddy-admin"
    ) as admin:
        return admin.get("/config/", timeout=10).json()


def caddy_tcp_ports(yard: RunningPlatform) -> list[int]:
    """Every TCP port this platform's Caddies listen on (their servers; no admin API)."""
    pids = [v for k, v in yard.dataplane["components"].items() if k.startswith("caddy-")]
    listening = subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()
    ports = {
        int(line.split()[3].rsplit(":", 1)[1])
        for line in listening
        if any(f"pid={pid}," in line for pid in pids)
    }
    return sorted(ports)


def test_a_build_cannot_reach_caddy_s_admin_api(
    yard: RunningPlatform, victim: dict[str, Any], tmp_path: Path
) -> None:
    """The admin API is a 0600 unix socket in the data directory, which no build container
    mounts, and no Caddy listens for it on TCP: a build that tries every way to replace the
    routes (an empty config through /load) reaches none, and the routes are unchanged."""
    url = url_of(yard, "victim")  # a served stage: the Caddies listen on its port
    sockets = [Path(p.removeprefix("unix:")) for p in yard.router_admin.split()]
    assert len(sockets) == 2, yard.router_admin
    before = [caddy_admin_config(path) for path in sockets]  # the host does reach them
    assert all("caddy-admin" in json.dumps(config["admin"]) for config in before), before
    ports = caddy_tcp_ports(yard)
    assert int(url.rsplit(":", 1)[1].strip("/")) in ports, (url, ports)
    load = '-X POST -H "Content-Type: application/json" -d "{}" http://caddy-admin/load'
    commands = [f"ls -l {sockets[0].parent} || echo 'blocked: run dir'"]
    commands += [
        f'echo "socket {path}: $(curl -s -m 5 -o /dev/null -w "%{{http_code}}" '
        f'--unix-socket {path} -H "Host: caddy-admin" {load})"'
        for path in sockets
    ]
    commands += [
        f'echo "tcp {port}: $(curl -s -m 5 -H "Host: caddy-admin" '
        f'http://127.0.0.1:{port}/config/ | head -c 300)"'
        for port in ports
    ]
    repo = GitRepo.from_example("hello", tmp_path / "nosy")
    repo.write("build.yml", spec_of(*commands))
    repo.commit("replace the router's config")
    yard.cli("stacks", "create", "nosy", "--repo", str(repo.path))
    log = build(yard, "nosy")["log"]
    assert "blocked: run dir" in log, log
    for path in sockets:
        answer = next(line for line in log.splitlines() if f"] socket {path}:" in line)
        assert answer.endswith(": 000"), answer  # curl ran, and nothing answered
    for port in ports:
        answer = next(line for line in log.splitlines() if f"] tcp {port}:" in line)
        assert '"apps"' not in answer, answer  # not Caddy's config
        assert '"admin"' not in answer, answer
    assert [caddy_admin_config(path) for path in sockets] == before
    assert "hello" in httpx.get(url, timeout=5).text


def probe_build(yard: RunningPlatform, tmp_path: Path) -> str:
    """A build that reports its container's limits and a RUN step's cgroup (its image,
    untagged, is removed by id)."""
    repo = GitRepo.from_example("hello", tmp_path / "probe")
    repo.write("Dockerfile.probe", "FROM busybox:latest\nRUN cat /proc/self/cgroup\n")
    repo.write(
        "build.yml",
        spec_of(
            'echo "pids.max=$(cat /sys/fs/cgroup/pids/pids.max)"',
            'echo "own=$(grep pids: /proc/self/cgroup)"',
            "docker build --no-cache --network host --iidfile probe.id -f Dockerfile.probe . "
            '&& echo "probe image $(cat probe.id)"',
            "exit 1",
        ),
    )
    repo.commit("probe")
    yard.cli("stacks", "create", "probe", "--repo", str(repo.path))
    log = str(build(yard, "probe")["log"])
    made = re.findall(r"probe image (sha256:[0-9a-f]{64})", log)  # untagged: remove it by id
    if made:
        subprocess.run(["docker", "rmi", *made], capture_output=True, timeout=120)
    assert made, log
    return log


def test_a_fork_bomb_fails_its_build_and_other_builds_go_on(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    # Set off nothing before the limit is known to hold, for the build and its RUN steps:
    # this engine is shared.
    probe = probe_build(yard, tmp_path)
    assert f"pids.max={BUILD_PIDS}" in probe, probe
    own = next(line for line in probe.splitlines() if "] own=" in line).split("pids:")[-1]
    assert f"pids:{own.strip()}/" in probe, probe  # the RUN step nests in the build's cgroup

    bomb = GitRepo.from_example("hello", tmp_path / "bomb")
    bomb.write(
        "build.yml",
        spec_of(
            "b() { b | b & }; b",
            "i=0; while [ $i -lt 400 ]; do sleep 60 & i=$((i+1)); done",
            "echo survived",
        ),
    )
    bomb.commit("a fork bomb")
    calm = GitRepo.from_example("hello", tmp_path / "calm")
    for stack, repo in (("bomb", bomb), ("calm", calm)):
        yard.cli("stacks", "create", stack, "--repo", str(repo.path))
    results: dict[str, dict[str, Any]] = {}

    def run(stack: str) -> None:
        results[stack] = build(yard, stack)

    bombing = threading.Thread(target=run, args=("bomb",))
    bombing.start()
    time.sleep(2)  # the bomb is going off
    run("calm")
    assert httpx.get(f"{yard.api_url}/healthz", timeout=5).status_code == 200
    bombing.join(timeout=300)

    assert results["calm"]["status"] == "SUCCEEDED", results["calm"]["log"]
    bombed = results["bomb"]
    assert bombed["status"] == "FAILED"
    # Whether the bomb's shell or the build container's own shell runs out first (which
    # ends the container and its cgroup), the log names the limit.
    assert f"the build reached its process limit ({BUILD_PIDS} processes)" in bombed["log"], bombed[
        "log"
    ]
    assert "survived" not in bombed["log"]
    assert build_containers(yard) == []


def test_a_build_out_of_processes_is_told_which_limit_and_what_to_change(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "crowd")
    # More sleeps at once than the limit allows: bash waits for room (the first ones end
    # after 2 s), then the command fails; the container lives on, its cgroup with it.
    crowd = f"for i in $(seq {BUILD_PIDS + 72}); do sleep 2 & done; wait; exit 3"
    repo.write("build.yml", spec_of(crowd, "echo never"))
    repo.commit("a crowd of processes")
    yard.cli("stacks", "create", "crowd", "--repo", str(repo.path))

    log = build(yard, "crowd")["log"]

    assert "Resource temporarily unavailable" in log
    assert f"the build reached its process limit ({BUILD_PIDS} processes)" in log, log
    assert "raise build.pids_limit in stackyard.yml" in log
    assert "Running command echo never" not in log  # the phase stopped at the crowd


def test_a_buildkit_step_out_of_processes_is_told_which_limit(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    """A BuildKit RUN step runs in a cgroup of its own under the BuildKit budget: the
    kernel's line for its refused fork is tied to the build by its own BuildKit build."""
    repo = GitRepo.from_example("hello", tmp_path / "kitcrowd")
    crowd = f"for i in $(seq {BUILD_PIDS + 72}); do sleep 2 & done; wait; exit 3"
    repo.write("Dockerfile.crowd", f"FROM busybox:latest\nRUN {crowd}\n")
    kit = "DOCKER_BUILDKIT=1 docker build --progress plain --no-cache --network host"
    repo.write("build.yml", spec_of(f"{kit} -f Dockerfile.crowd .", "echo never"))
    repo.commit("a crowd of processes in a BuildKit step")
    yard.cli("stacks", "create", "kitcrowd", "--repo", str(repo.path))

    with kept_buildkit_budget():
        log = build(yard, "kitcrowd")["log"]

    assert "can't fork" in log, log
    assert f"a BuildKit RUN step reached the process limit of BuildKit builds ({BUILD_PIDS} " in log
    assert "Running command echo never" not in log


def test_a_build_that_fills_its_disk_is_stopped(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "filler")
    repo.write(
        "build.yml",
        spec_of(
            f"dd if=/dev/zero of=fill bs=1M count={BUILD_DISK_MIB * 3} status=none",
            "sleep 10",
            "echo survived",
        ),
    )
    repo.commit("fill the disk")
    yard.cli("stacks", "create", "filler", "--repo", str(repo.path))

    record = build(yard, "filler")

    assert record["status"] == "FAILED"
    assert f"over its limit of {BUILD_DISK_MIB} MiB, and was stopped" in record["log"]
    assert "survived" not in record["log"]
    assert httpx.get(f"{yard.api_url}/healthz", timeout=5).status_code == 200
    assert build_containers(yard) == []
    deadline = time.monotonic() + 30  # the checkout goes after the result is recorded
    while list((yard.data_dir / "work").glob("filler-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list((yard.data_dir / "work").glob("filler-*"))


def test_a_stack_names_its_own_build_image(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "own-image")
    repo.write("stackyard.yml", "build: {image: 'busybox:latest'}\n")
    repo.write("build.yml", spec_of("busybox | head -1", "exit 1"))
    repo.commit("build in busybox")
    yard.cli("stacks", "create", "ownimage", "--repo", str(repo.path))
    log = build(yard, "ownimage")["log"]
    assert "Commands run in a build container of busybox:latest" in log
    assert "BusyBox v" in log

    repo.write("stackyard.yml", "build: {image: 'stackyard-test/no-such-image:1'}\n")
    repo.commit("an image the engine lacks")
    missing = build(yard, "ownimage")
    assert missing["status"] == "FAILED"
    assert (
        "the build image stackyard-test/no-such-image:1 is not in the Docker engine"
        in (missing["log"])
    )


PROBE_APP = """\
#!/bin/sh
# A hostile app: it reports what it could reach, then serves the report.
mkdir -p /tmp/www
{
  grep -E 'CapEff|NoNewPrivs' /proc/self/status
  if touch /escape 2>/dev/null; then echo "rootfs=writable"; else echo "rootfs=read-only"; fi
  echo "pids.max=$(cat /sys/fs/cgroup/pids/pids.max)"
  echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
  if ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; then echo "raw=yes"; else echo "raw=no"; fi
  wget -q -O /dev/null "$API/api/v1/stacks" 2>&1 | head -1 | sed 's/^/api: /'
  wget -q -O /dev/null "http://$REGISTRY/v2/_catalog" 2>&1 | head -1 | sed 's/^/registry: /'
  ls "$DATA" 2>&1 | head -1 | sed 's/^/data: /'
  echo "done"
} > /tmp/www/index.html 2>&1
exec busybox httpd -f -p "${HOST:-127.0.0.1}:${PORT:-8080}" -h /tmp/www
"""


def test_a_hostile_app_is_fenced_off(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "app")
    repo.write("probe.sh", PROBE_APP)
    repo.write(
        "Dockerfile", 'FROM busybox:latest\nCOPY probe.sh /probe.sh\nCMD ["sh", "/probe.sh"]\n'
    )
    repo.write(
        "stackyard.yml",
        "stages:\n  - name: dev\n    read_only: true\n    pids_limit: 64\n"
        f"    variables:\n      API: {yard.api_url}\n      REGISTRY: {yard.registry}\n"
        f"      DATA: {yard.data_dir}\n",
    )
    repo.commit("a hostile app")
    yard.cli("stacks", "create", "app", "--repo", str(repo.path))
    assert build(yard, "app")["status"] == "SUCCEEDED"
    deploy_to_dev(yard, "app")

    report = httpx.get(url_of(yard, "app"), timeout=5).text

    assert "done" in report, report
    capabilities = next(line for line in report.splitlines() if line.startswith("CapEff"))
    assert int(capabilities.split()[-1], 16) & NET_RAW == 0
    assert "NoNewPrivs:\t1" in report
    assert "rootfs=read-only" in report
    assert "pids.max=64" in report
    assert f"memory={256 * 1024 * 1024}" in report
    assert "raw=no" in report
    assert "api: wget: server returned error: HTTP/1.1 401" in report
    assert "registry: wget: server returned error: HTTP/1.1 401" in report
    assert "data: ls:" in report
    assert "No such file or directory" in report
