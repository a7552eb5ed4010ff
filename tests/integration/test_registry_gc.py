"""The registry's garbage collection with the registry read-only, against a real data
plane (its keeper switches the registry's mode) and the real engine: a push and a retag
that arrive while it is read-only are refused (405), wait, and succeed once it serves
again; the deleted image's blobs are gone; a push after a collection sends again the
layers it removed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stackyard.images.docker_builder import DockerBuilder
from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
from stackyard.images.dockerproxy.server import BuildProxy
from stackyard.images.registry import RegistryClient
from stackyard.platform import registry_storage
from stackyard.platform.components import registry_login
from stackyard.platform.dataplane import dataplane_status, ensure_dataplane, stop_dataplane
from stackyard.platform.registry_gc import collect_registry_garbage
from stackyard.settings import Settings

from .conftest import free_port, require
from .registry_fixtures import ACCESS_LINE

pytestmark = pytest.mark.integration

REPOSITORY = "gc/app"


def refused(log: Path, method: str, fragment: str) -> bool:
    text = log.read_text(encoding="utf-8", errors="replace")
    return any(
        m["method"] == method and fragment in m["uri"] and m["status"] == "405"
        for m in ACCESS_LINE.finditer(text)
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def build_image(tag: str, directory: Path) -> None:
    """A tiny image with a layer of its own (its content is unique)."""
    context = directory / tag.replace("/", "_").replace(":", "_")
    context.mkdir()
    (context / "marker").write_text(uuid.uuid4().hex)
    (context / "Dockerfile").write_text("FROM busybox:latest\nCOPY marker /marker\n")
    subprocess.run(
        ["docker", "build", "-q", "--network", "host", "-t", tag, str(context)],
        capture_output=True,
        check=True,
        timeout=180,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Settings]:
    """A data plane of its own (keeper, registry, Caddies; no control plane), stopped by
    the pids it recorded."""
    require("docker-registry")
    require("caddy")
    settings = Settings(data_dir=tmp_path / "data", registry_port=free_port())
    try:
        ensure_dataplane(settings)
        yield settings
    finally:
        stop_dataplane(settings)


def registry_mode(settings: Settings) -> str:
    status = dataplane_status(settings)
    assert status is not None
    return str(status["registry_mode"])


def test_writes_during_garbage_collection_wait_and_succeed(
    registry: Settings, tmp_path: Path
) -> None:
    settings = registry
    login = registry_login(settings)
    log = settings.logs_dir / "registry.log"
    base = f"{settings.registry_endpoint}/{REPOSITORY}"
    images = [f"{base}:old", f"{base}:new", f"{base}:cycle"]
    builder = DockerBuilder()
    client = RegistryClient(
        settings.registry_endpoint, username=login.username, password=login.password
    )
    try:
        for image in images:
            build_image(image, tmp_path)
        old = builder.push(base, "old", auth=login, on_line=lambda _: None)
        assert old is not None
        root = registry_storage.storage_root(settings.data_dir)
        old_blobs = set(registry_storage.blob_files(root))
        client.delete_manifest(REPOSITORY, old)  # its layer is garbage now
        pushed: dict[str, object] = {}
        lines: list[str] = []

        def push() -> None:
            pushed["digest"] = builder.push(base, "new", auth=login, on_line=lines.append)

        def retag() -> None:
            pushed["retag"] = client.retag(REPOSITORY, "new", "again")

        threads: list[threading.Thread] = []

        def while_read_only() -> None:
            assert registry_mode(settings) == "read-only"
            threads.append(threading.Thread(target=push))
            threads[-1].start()
            wait_for(lambda: refused(log, "POST", "/blobs/uploads/"), "the push to be refused")
            wait_for(lambda: "digest" in pushed or bool(lines), "the push to start")

        collect_registry_garbage(
            settings,
            binary=shutil.which("docker-registry"),
            while_read_only=while_read_only,
        )
        threads[0].join(timeout=180)
        assert pushed["digest"] == client.resolve(REPOSITORY, "new")
        assert any("retrying" in line for line in lines)

        # A retag (a release) against a read-only registry waits the same way.
        def retag_while_read_only() -> None:
            threads.append(threading.Thread(target=retag))
            threads[-1].start()
            wait_for(lambda: refused(log, "PUT", "/manifests/again"), "the retag to be refused")

        collect_registry_garbage(
            settings,
            binary=shutil.which("docker-registry"),
            while_read_only=retag_while_read_only,
        )
        threads[1].join(timeout=180)
        assert pushed["retag"] == pushed["digest"]

        left = set(registry_storage.blob_files(root))
        assert old_blobs - left, "the deleted image's own layer was not collected"
        assert client.resolve(REPOSITORY, "again") == pushed["digest"]
        assert "blob eligible for deletion" in log.read_text(encoding="utf-8")

        # A push whose layers went up before a collection and its manifest after fails
        # with "blob unknown" and is pushed again: the engine then asks for each layer and
        # sends again those the collection removed, even layers it pushed there before.
        before = set(registry_storage.blob_files(root))
        cycle = builder.push(base, "cycle", auth=login, on_line=lambda _: None)
        assert cycle is not None
        sent = set(registry_storage.blob_files(root)) - before
        assert sent, "the image's own layer was not sent"
        client.delete_manifest(REPOSITORY, cycle)
        collect_registry_garbage(settings, binary=shutil.which("docker-registry"))
        assert registry_mode(settings) == "read-write"
        assert not sent & set(registry_storage.blob_files(root))
        assert builder.push(base, "cycle", auth=login, on_line=lambda _: None) == cycle
        assert sent <= set(registry_storage.blob_files(root))
        assert client.resolve(REPOSITORY, "cycle") == cycle
    finally:
        client.close()
        for image in images:
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
        builder.close()


def test_a_build_s_own_docker_push_through_the_proxy_waits_out_a_collection(
    registry: Settings, tmp_path: Path
) -> None:
    """build.yml's `docker push` goes through the build proxy: the proxy holds back the
    registry's refusal for now and sends the push again, so the build's docker CLI sees
    one push that went through."""
    settings = registry
    login = registry_login(settings)
    log = settings.logs_dir / "registry.log"
    stack = f"gcproxy{uuid.uuid4().hex[:6]}"
    image = f"{settings.registry_endpoint}/{stack}:v1"
    proxy = BuildProxy()
    opened = proxy.open(BuildScope(stack, settings.registry_endpoint, login, BuildLimits(pids=256)))
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": f"unix://{opened.path}",
           "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "0"}  # fmt: skip
    client = RegistryClient(
        settings.registry_endpoint, username=login.username, password=login.password
    )
    pushed: dict[str, subprocess.CompletedProcess[str]] = {}
    seed, builder = f"{settings.registry_endpoint}/{stack}:seed", DockerBuilder()
    try:
        build_image(image, tmp_path)
        build_image(seed, tmp_path)  # the registry has something to collect
        builder.push(f"{settings.registry_endpoint}/{stack}", "seed", auth=login, on_line=print)

        def push() -> None:
            pushed["result"] = subprocess.run(
                ["/usr/bin/docker", "push", image],
                env=env, capture_output=True, text=True, timeout=240,
            )  # fmt: skip

        thread = threading.Thread(target=push)

        def while_read_only() -> None:
            thread.start()
            wait_for(lambda: refused(log, "POST", "/blobs/uploads/"), "the push to be refused")

        collect_registry_garbage(
            settings, binary=shutil.which("docker-registry"), while_read_only=while_read_only
        )
        thread.join(timeout=240)
        result = pushed["result"]
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the registry refused the push for now" in result.stdout
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", result.stdout)
        assert digest is not None, result.stdout
        assert client.resolve(stack, "v1") == digest.group(1)
    finally:
        client.close()
        opened.close()
        proxy.close()
        builder.close()
        subprocess.run(["docker", "rmi", "-f", image, seed], capture_output=True, check=False)
