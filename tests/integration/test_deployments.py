"""Deployments against the real engine, registry and Caddy: rollouts, faults, rollback.

One platform serves the module; each test deploys its own stack. Health checks and drain
delays are short in these stackyard.yml files so that failures are detected quickly.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackyard.engines.base import LABEL_STACK

from .conftest import RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

FAST = """\
stages:
  - name: dev
    replicas: {replicas}
{port}    health: {{path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}}
    deploy: {{drain_seconds: 1, stop_timeout: 3}}
    variables: {{GREETING: {greeting}}}
"""

CRASHES_AT_START = (
    'FROM busybox:latest\nCMD ["sh", "-c", "echo boom: missing DATABASE_URL; exit 3"]\n'
)
NEVER_HEALTHY = "FROM busybox:latest\nCOPY www /www\nRUN rm /www/healthz\n" + (
    'CMD ["sh", "-c", "exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]\n'
)
# Serves, but has no /healthz until the test moves it in place (docker exec): with a long
# start period its deployment stays IN_PROGRESS until then, so another one can wait QUEUED.
HEALTHY_WHEN_TOLD = "FROM busybox:latest\nCOPY www /www\nRUN mv /www/healthz /www/later\n" + (
    'CMD ["sh", "-c", "exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]\n'
)
DIES_LATER = "FROM busybox:latest\nCOPY www /www\n" + (
    'CMD ["sh", "-c", "busybox httpd -p ${HOST}:${PORT} -h /www; sleep 3; echo bye; exit 1"]\n'
)


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("deploy") / "data")
    try:
        yield running
    finally:
        stop_platform(running)


def new_stack(
    yard: RunningPlatform,
    tmp_path: Path,
    name: str,
    *,
    replicas: int = 1,
    port: int | None = None,
    greeting: str = "hi",
) -> GitRepo:
    repo = GitRepo.from_example("hello", tmp_path / name)
    port_line = f"    port: {port}\n" if port else ""
    repo.write("stackyard.yml", FAST.format(replicas=replicas, port=port_line, greeting=greeting))
    repo.commit("fast health checks")
    yard.cli("stacks", "create", name, "--repo", str(repo.path))
    return repo


def ship(yard: RunningPlatform, stack: str, *, ok: bool = True) -> dict[str, Any]:
    """Build the newest commit, release it to dev and deploy it; the deployment record."""
    yard.cli("build", stack, timeout=300)
    yard.cli("release", stack, "--stage", "dev")
    before = len(json.loads(yard.cli("deployments", stack, "--stage", "dev", "--json").stdout))
    result = yard.cli("deploy", stack, "--stage", "dev", "--json", check=ok, timeout=300)
    if not ok:
        assert result.returncode == 1, result.stderr
        return deployment(yard, stack, before + 1)
    return dict(json.loads(result.stdout))


def deployment(yard: RunningPlatform, stack: str, number: int) -> dict[str, Any]:
    listing = json.loads(yard.cli("deployments", stack, "--stage", "dev", "--json").stdout)
    return next(d for d in listing if d["number"] == number)


def check(yard: RunningPlatform, stack: str) -> dict[str, Any]:
    return dict(json.loads(yard.cli("check", stack, "--stage", "dev", "--json").stdout))


def stage_url(yard: RunningPlatform, stack: str) -> str:
    return str(json.loads(yard.cli("url", stack, "--stage", "dev", "--json").stdout)["url"])


def listening_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on (from /proc: its socket inodes, then net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def version_served(url: str) -> str:
    text = httpx.get(url + "/", timeout=5).text
    match = re.search(r"VERSION=(\w+)", text)
    return match.group(1) if match else text


def wait_converged(yard: RunningPlatform, stack: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state = check(yard, stack)
    while not state["converged"] and time.monotonic() < deadline:
        time.sleep(0.5)
        state = check(yard, stack)
    assert state["converged"], state
    return state


class Watcher:
    """Requests the stage URL in a loop and counts answers that are not 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    status = client.get(self.url + "/").status_code
                except httpx.HTTPError as exc:
                    self.bad.append(f"{type(exc).__name__}: {exc}")
                else:
                    if status == 200:
                        self.ok += 1
                    else:
                        self.bad.append(f"HTTP {status}")
                time.sleep(0.02)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_deploy_serves_the_release_and_check_matches(yard: RunningPlatform, tmp_path: Path) -> None:
    new_stack(yard, tmp_path, "first", replicas=2)
    record = ship(yard, "first")
    assert record["status"] == "COMPLETED"
    assert (record["tasks_started"], record["tasks_healthy"], record["tasks_routed"]) == (2, 2, 2)
    state = wait_converged(yard, "first")
    assert [t["match"] for t in state["tasks"]] == [True, True]
    assert {t["digest"] for t in state["tasks"]} == {state["digest"]}
    assert version_served(stage_url(yard, "first")) == "v1"
    text = yard.cli("check", "first", "--stage", "dev").stdout.splitlines()
    assert text[0] == f"dev ENV_DIGEST: {state['digest']}"
    assert text[1:] == [f"TASK_DIGEST: {state['digest']} (match)"] * 2
    tasks = json.loads(yard.cli("tasks", "first", "--stage", "dev", "--json").stdout)
    assert {t["digest"] for t in tasks} == {state["digest"]}
    assert all(t["address"].startswith("127.0.0.1:") for t in tasks)


def test_rolling_update_under_load_fails_no_request(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = new_stack(yard, tmp_path, "rolling", replicas=2)
    ship(yard, "rolling")
    url = stage_url(yard, "rolling")
    repo.set_version("v2")
    yard.cli("build", "rolling", timeout=300)
    yard.cli("release", "rolling", "--stage", "dev")
    load = subprocess.Popen(
        ["wrk", "-t2", "-c16", "-d8s", "--timeout", "5s", url + "/"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        record = json.loads(yard.cli("deploy", "rolling", "--stage", "dev", "--json").stdout)
        output, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
    assert record["status"] == "COMPLETED"
    assert "Non-2xx" not in output, output
    assert "Socket errors" not in output, output
    assert re.search(r"(\d+) requests in", output), output
    assert version_served(url) == "v2"
    wait_converged(yard, "rolling")


def test_app_crashing_at_start_rolls_back_while_old_tasks_serve(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = new_stack(yard, tmp_path, "crashy")
    good = ship(yard, "crashy")["digest"]
    url = stage_url(yard, "crashy")
    repo.write("Dockerfile", CRASHES_AT_START)
    repo.commit("crashes at start")
    with Watcher(url) as watcher:
        failed = ship(yard, "crashy", ok=False)
    assert failed["status"] == "FAILED"
    assert "exited with status 3" in failed["reason"]
    assert "boom: missing DATABASE_URL" in failed["reason"]
    assert watcher.bad == []
    assert watcher.ok > 0
    state = wait_converged(yard, "crashy")
    assert state["digest"] == good
    history = json.loads(yard.cli("deployments", "crashy", "--stage", "dev", "--json").stdout)
    assert history[0]["trigger"] == "automatic rollback"
    assert history[0]["status"] == "COMPLETED"
    releases = json.loads(yard.cli("releases", "crashy", "--stage", "dev", "--json").stdout)
    assert releases[0]["digest"] == good
    assert "rollback" in releases[0]["source"]


def test_app_that_never_passes_its_health_check_is_rolled_back(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = new_stack(yard, tmp_path, "sick")
    good = ship(yard, "sick")["digest"]
    repo.write("Dockerfile", NEVER_HEALTHY)
    repo.commit("no /healthz")
    failed = ship(yard, "sick", ok=False)
    assert "is unhealthy" in failed["reason"]
    assert "last health check: GET http://127.0.0.1:" in failed["reason"]
    assert "HTTP 404" in failed["reason"]
    assert wait_converged(yard, "sick")["digest"] == good


def test_a_task_that_dies_later_is_replaced(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = new_stack(yard, tmp_path, "mortal")
    repo.write("Dockerfile", DIES_LATER)
    repo.commit("dies after 3 s")
    record = ship(yard, "mortal")
    assert record["status"] == "COMPLETED"
    first = {
        t["id"] for t in json.loads(yard.cli("tasks", "mortal", "--stage", "dev", "--json").stdout)
    }
    deadline = time.monotonic() + 30
    replaced = False
    while time.monotonic() < deadline and not replaced:
        time.sleep(0.5)
        tasks = json.loads(yard.cli("tasks", "mortal", "--stage", "dev", "--json").stdout)
        replaced = any(t["id"] not in first and t["state"] == "running" for t in tasks)
    assert replaced, "the dead task was not replaced"
    with sqlite3.connect(yard.data_dir / "stackyard.db") as connection:
        events = connection.execute(
            "select message from events where kind = 'heal' and subject = 'mortal/dev'"
        ).fetchall()
    assert any("exited with status 1" in e[0] and "replacing it" in e[0] for e in events)


def test_port_in_use_fails_the_deployment_naming_the_port(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        new_stack(yard, tmp_path, "clash", port=port)
        failed = ship(yard, "clash", ok=False)
    assert failed["status"] == "FAILED"
    assert f"port 127.0.0.1:{port} is in use by another process" in failed["reason"]


def test_rollback_restores_image_and_config(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = new_stack(yard, tmp_path, "backwards", greeting="first")
    v1 = ship(yard, "backwards")
    repo.write("stackyard.yml", FAST.format(replicas=1, port="", greeting="second"))
    repo.set_version("v2")
    v2 = ship(yard, "backwards")
    assert v1["digest"] != v2["digest"]
    back = json.loads(yard.cli("rollback", "backwards", "--stage", "dev", "--json").stdout)
    assert back["status"] == "COMPLETED"
    assert back["digest"] == v1["digest"]
    releases = json.loads(yard.cli("releases", "backwards", "--stage", "dev", "--json").stdout)
    assert releases[0]["config"]["variables"] == {"GREETING": "first"}
    assert version_served(stage_url(yard, "backwards")) == "v1"
    assert wait_converged(yard, "backwards")["digest"] == v1["digest"]


def test_release_whose_image_was_deleted_is_refused_clearly(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    """The deploy asks the registry for the manifest before recording anything (the
    engine, which pulled it when the release ran its build, might start it regardless)."""
    repo = new_stack(yard, tmp_path, "ghost")
    good = ship(yard, "ghost")["digest"]
    repo.set_version("v2")
    yard.cli("build", "ghost", timeout=300)
    release = json.loads(yard.cli("release", "ghost", "--stage", "dev", "--json").stdout)
    delete_manifest(yard, "ghost", release["digest"])
    result = yard.cli("deploy", "ghost", "--stage", "dev", "--json", check=False, timeout=300)
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert (
        f"release {release['number']} of ghost/dev cannot be deployed: its image "
        f"{release['digest']} is no longer in registry {yard.registry} (ghost)"
    ) in said, said
    listing = json.loads(yard.cli("deployments", "ghost", "--stage", "dev", "--json").stdout)
    assert [d["number"] for d in listing] == [1]  # nothing recorded
    assert wait_converged(yard, "ghost")["digest"] == good


def delete_manifest(yard: RunningPlatform, stack: str, digest: str) -> None:
    """Delete an image's manifest from the platform's registry, as retention does."""
    creds = json.loads((yard.data_dir / "registry-credentials.json").read_text())
    deleted = httpx.delete(
        f"http://{yard.registry}/v2/{stack}/manifests/{digest}",
        auth=(creds["username"], creds["password"]),
        timeout=30,
    )
    assert deleted.status_code == 202, deleted.text


def build_release(yard: RunningPlatform, stack: str) -> dict[str, Any]:
    yard.cli("build", stack, timeout=300)
    return dict(json.loads(yard.cli("release", stack, "--stage", "dev", "--json").stdout))


def wait_for(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return found


def test_an_image_deleted_after_the_api_checked_it_is_never_started(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    """The controller asks the registry again: before a queued deployment's tasks start
    (the engine would start its cached copy), before its automatic rollback copies an
    older release, and before a heal (which goes on from the engine's copy, and says so)."""
    repo = new_stack(yard, tmp_path, "vanish")
    repo.write("Dockerfile", HEALTHY_WHEN_TOLD)
    repo.write("stackyard.yml", FAST.format(replicas=1, port="", greeting="hi").replace(
        "start_period: 2", "start_period: 300"))  # fmt: skip
    repo.commit("healthy when told")
    first = build_release(yard, "vanish")
    repo.set_version("v2")
    second = build_release(yard, "vanish")
    api = f"{yard.api_url}/api/v1/stacks/vanish/stages/dev/deployments"
    headers = {"Authorization": f"Bearer {yard.token}"}

    def deploy(release: int) -> None:
        posted = httpx.post(api, json={"release": release}, headers=headers, timeout=60)
        assert posted.status_code < 300, posted.text

    def tasks() -> list[dict[str, Any]]:
        listing = yard.cli("tasks", "vanish", "--stage", "dev", "--json").stdout
        return [t for t in json.loads(listing) if t["state"] == "running"]

    deploy(first["number"])
    (task,) = wait_for(tasks, "release 1's task")  # starting: no /healthz yet
    deploy(second["number"])  # QUEUED behind deployment 1
    assert deployment(yard, "vanish", 2)["status"] == "QUEUED"
    delete_manifest(yard, "vanish", second["digest"])
    subprocess.run(["docker", "exec", task["id"], "mv", "/www/later", "/www/healthz"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    failed = wait_for(
        lambda: (d := deployment(yard, "vanish", 2))["status"] == "FAILED" and d, "deployment 2"
    )
    assert failed["reason"].startswith(
        f"release 2 of vanish/dev cannot be deployed: its image {second['digest']} is no "
        f"longer in registry {yard.registry} (vanish)"
    ), failed
    assert deployment(yard, "vanish", 1)["status"] == "COMPLETED"
    assert [t["digest"] for t in tasks()] == [first["digest"]]  # release 2 never started
    assert failed["tasks_started"] == 0

    # The serving release's image goes too; a deployment that fails cannot go back to it.
    delete_manifest(yard, "vanish", first["digest"])
    repo.write("Dockerfile", CRASHES_AT_START)
    repo.commit("crashes at start")
    crashed = ship(yard, "vanish", ok=False)
    assert crashed["status"] == "FAILED"
    assert (
        f"; rollback to release 1 failed: release 1 of vanish/dev cannot be deployed: its "
        f"image {first['digest']} is no longer in registry {yard.registry} (vanish)"
    ) in crashed["reason"], crashed
    listing = json.loads(yard.cli("deployments", "vanish", "--stage", "dev", "--json").stdout)
    assert [d["number"] for d in listing] == [3, 2, 1]  # no automatic rollback recorded
    assert wait_converged(yard, "vanish")["digest"] == first["digest"]  # still serving

    # A heal of release 1 starts the engine's own copy, and the stage's events say why.
    subprocess.run(["docker", "kill", task["id"]], check=True, capture_output=True, timeout=60)
    healed = wait_for(lambda: [t for t in tasks() if t["id"] != task["id"]], "the heal")
    assert [t["digest"] for t in healed] == [first["digest"]]
    with sqlite3.connect(yard.data_dir / "stackyard.db") as connection:
        events = connection.execute(
            "select message from events where kind = 'image' and subject = 'vanish/dev'"
        ).fetchall()
    assert any(f"release 1 is served but its image {first['digest']}" in e[0] for e in events)


def test_caddy_restarted_mid_deployment(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = new_stack(yard, tmp_path, "phoenix")
    ship(yard, "phoenix")
    url = stage_url(yard, "phoenix")
    repo.set_version("v2")
    yard.cli("build", "phoenix", timeout=300)
    yard.cli("release", "phoenix", "--stage", "dev")
    started = json.loads(
        yard.cli("deploy", "phoenix", "--stage", "dev", "--detach", "--json").stdout
    )
    # Both Caddies: the stage has no router until the keeper starts them again.
    components = yard.dataplane["components"]
    for name in ("caddy-1", "caddy-2"):
        subprocess.run(["kill", "-9", str(components[name])], check=True)
    deadline = time.monotonic() + 60
    record = deployment(yard, "phoenix", started["number"])
    # QUEUED too: under load the first read can come before the stage loop claims it.
    while record["status"] in ("QUEUED", "IN_PROGRESS") and time.monotonic() < deadline:
        time.sleep(0.5)
        record = deployment(yard, "phoenix", started["number"])
    assert record["status"] == "COMPLETED", record
    deadline = time.monotonic() + 20
    served = ""
    while time.monotonic() < deadline and served != "v2":
        try:
            served = version_served(url)
        except httpx.HTTPError:
            time.sleep(0.3)
    assert served == "v2"


def test_deleting_a_stack_removes_what_the_platform_kept_for_it(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = new_stack(yard, tmp_path, "doomed")
    shipped = ship(yard, "doomed")
    url = stage_url(yard, "doomed")
    version_served(url)  # it serves
    remote_url = yard.cli("remote", "doomed").stdout.strip()
    # Its URL holds a push token, which may not fetch: a dry-run push makes the remote.
    subprocess.run(["git", "push", "--dry-run", remote_url, "main"], cwd=repo.path,
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    remote = yard.data_dir / "remotes" / "doomed.git"
    assert remote.is_dir()

    refused = yard.cli("stacks", "delete", "doomed", check=False)  # no terminal, no --yes
    assert refused.returncode != 0
    assert "stackyard stacks delete doomed --yes" in refused.stderr
    version_served(url)  # nothing was deleted

    deleted = yard.cli("stacks", "delete", "doomed", "--yes")
    assert deleted.stdout.strip() == "Deleted stack doomed."  # nothing was left

    # Its route's port is closed by this platform's Caddies. (Whether it answers is not
    # asked: on a shared machine another platform's stage may take the freed port, the
    # first free one, at once; or share it, bound as both Caddies bind with SO_REUSEPORT.)
    port = int(url.rsplit(":", 1)[1])
    caddies = [v for k, v in yard.dataplane["components"].items() if k.startswith("caddy-")]
    assert caddies
    assert all(port not in listening_ports(int(pid)) for pid in caddies)
    labelled = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL_STACK}=doomed"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert labelled == []
    assert not remote.exists()
    images = subprocess.run(
        ["docker", "images", "-q", f"{yard.registry}/doomed"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert images == []
    creds = json.loads((yard.data_dir / "registry-credentials.json").read_text())
    tags = httpx.get(f"http://{yard.registry}/v2/doomed/tags/list", timeout=10,
                     auth=(creds["username"], creds["password"]))  # fmt: skip
    assert tags.status_code == 404 or not tags.json().get("tags"), tags.text
    assert shipped["digest"]

    # The name is free again, with nothing of the old stack behind it.
    other = GitRepo.from_example("hello", tmp_path / "reborn")
    yard.cli("stacks", "create", "doomed", "--repo", str(other.path))
    assert json.loads(yard.cli("images", "doomed", "--json").stdout)["images"] == []
