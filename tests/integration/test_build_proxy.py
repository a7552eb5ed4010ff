"""The build proxy end to end: Debian's docker CLI, as a build runs it, against the real
engine and a real registry through one build's proxy socket."""

# ruff: noqa: F811 - pytest fixtures imported from registry_fixtures are used as arguments

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
from stackyard.images.dockerproxy.server import BuildProxy, ProxySocket
from stackyard.registry_login import RegistryLogin
from tests.integration.buildkit_budget import budget_value, kept_buildkit_budget
from tests.integration.image_ids import copy_from_id
from tests.integration.registry_fixtures import (  # noqa: F401
    LiveRegistry,
    live_registry,
    second_live_registry,
)

pytestmark = pytest.mark.integration

DOCKER = "/usr/bin/docker"  # Debian's CLI, the one in the build image


@dataclass
class BuildDocker:
    """The docker CLI of one build of ``stack``, with no login of its own."""

    socket: ProxySocket
    stack: str
    config: Path

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` with the legacy builder, or BuildKit when ARGS start --buildkit."""
        buildkit = args[:1] == ("--buildkit",)
        args = args[1:] if buildkit else args
        env = {
            "PATH": os.environ["PATH"],
            "DOCKER_HOST": f"unix://{self.socket.path}",
            "DOCKER_BUILDKIT": "1" if buildkit else "0",
            "DOCKER_CONFIG": str(self.config),
        }
        return subprocess.run(
            [DOCKER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=180
        )


@pytest.fixture
def build_docker(live_registry: LiveRegistry, tmp_path: Path) -> Iterator[BuildDocker]:
    stack = f"proxy{secrets.token_hex(3)}"
    login = RegistryLogin(live_registry.endpoint, live_registry.username, live_registry.password)
    proxy = BuildProxy()
    socket = proxy.open(BuildScope(stack, live_registry.endpoint, login, BuildLimits(pids=256)))
    config = tmp_path / "docker-config"
    config.mkdir()
    try:
        yield BuildDocker(socket, stack, config)
    finally:
        socket.close()
        proxy.close()
        names = subprocess.run(
            [DOCKER, "images", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True, text=True, timeout=60,
        ).stdout.split()  # fmt: skip
        ours = [n for n in names if stack in n]
        if ours:
            subprocess.run([DOCKER, "rmi", "-f", *ours], capture_output=True, timeout=120)


def context(tmp_path: Path, dockerfile: str) -> Path:
    directory = tmp_path / "context"
    directory.mkdir(exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    return directory


def test_a_build_builds_tags_and_pushes_to_its_own_repository_without_a_login(
    build_docker: BuildDocker, live_registry: LiveRegistry, tmp_path: Path
) -> None:
    docker, stack = build_docker, build_docker.stack
    own = f"{live_registry.endpoint}/{stack}"
    ctx = context(tmp_path, "FROM busybox:latest\nRUN echo built > /built\n")

    built = docker("build", "--network", "host", "-t", f"{stack}-built", str(ctx))
    assert built.returncode == 0, built.stderr
    assert docker("tag", f"{stack}-built", f"{own}:v1").returncode == 0
    pushed = docker("push", f"{own}:v1")
    assert pushed.returncode == 0, pushed.stderr
    assert live_registry.skopeo_digest(stack, "v1").startswith("sha256:")
    again = docker("build", "--network", "host", "-t", f"{stack}-built", str(ctx))
    assert again.returncode == 0, again.stderr  # a name the stack's build made: its own
    login = docker("login", "-u", "anyone", "--password-stdin", live_registry.endpoint, stdin="x")
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout
    listed = docker("images", "--format", "{{.Repository}}").stdout.split()
    assert f"{stack}-built" in listed
    # A failed step's container goes too (the client did not ask --force-rm).
    mark = f"failing-{stack}"
    failing = context(tmp_path, f"FROM busybox:latest\nRUN echo {mark} && exit 3\n")
    failed = docker("build", "--network", "host", "--no-cache", str(failing))
    assert failed.returncode != 0
    assert mark in failed.stdout, failed.stdout
    commands = subprocess.run(
        [DOCKER, "ps", "-a", "--no-trunc", "--format", "{{.Command}}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert mark not in commands


def test_a_build_s_run_steps_share_the_build_s_limits(
    build_docker: BuildDocker, tmp_path: Path
) -> None:
    holder = subprocess.run(
        [DOCKER, "run", "-d", "--rm", "--network", "host", "--pids-limit", "64",
         "busybox:latest", "sleep", "120"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        build_docker.socket.nest_builds_in(f"/docker/{holder}")
        ctx = context(
            tmp_path,
            "FROM busybox:latest\nRUN cat /proc/self/cgroup | grep pids: "
            "&& cat /sys/fs/cgroup/memory/memory.limit_in_bytes\n",
        )
        built = build_docker("build", "--no-cache", "--network", "host", str(ctx))
        assert built.returncode == 0, built.stderr
        assert f"pids:/docker/{holder}/" in built.stdout
        assert str(BuildLimits().memory) in built.stdout
    finally:
        subprocess.run([DOCKER, "rm", "-f", holder], capture_output=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--rm", "-v", "/:/host", "busybox", "cat", "/host/etc/shadow"], "containers"),
        (["run", "--rm", "--privileged", "busybox", "true"], "containers"),
        (["create", "busybox"], "containers"),
        (["exec", "anything", "true"], "containers"),
        (["volume", "create", "v"], "volumes"),
        (["network", "create", "n"], "networks"),
        (["service", "create", "busybox"], "docker service create"),
        (["swarm", "init"], "swarm"),
        (["image", "prune", "-f"], "pruning"),
        (["system", "df"], "system"),
        (["events", "--since", "1s", "--until", "2s"], "events"),
    ],
)
def test_everything_beyond_images_is_refused_with_the_proxy_s_message(
    build_docker: BuildDocker, args: list[str], words: str
) -> None:
    done = build_docker(*args)
    assert done.returncode != 0
    assert "Stackyard's build proxy refused" in done.stderr
    assert words in done.stderr
    assert build_docker.socket.refusals


def test_another_stack_s_repository_and_the_base_images_are_out_of_reach(
    build_docker: BuildDocker, live_registry: LiveRegistry, tmp_path: Path
) -> None:
    docker, stack = build_docker, build_docker.stack
    other = f"{live_registry.endpoint}/victim"
    ctx = context(tmp_path, "FROM busybox:latest\nRUN echo evil > /evil\n")
    assert docker("build", "--network", "host", "-t", f"{stack}-evil", str(ctx)).returncode == 0
    busybox = docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest").stdout

    attempts = {
        "tag over another stack": ["tag", f"{stack}-evil", f"{other}:latest"],
        "push to another stack": ["push", f"{other}:latest"],
        "pull another stack": ["pull", f"{other}:latest"],
        "build into another stack": ["build", "-t", f"{other}:latest", str(ctx)],
        "replace a base image": ["tag", f"{stack}-evil", "busybox:latest"],
        "build over a base image": ["build", "-t", "busybox:latest", str(ctx)],
        "remove a base image": ["rmi", "busybox:latest"],
        "load images": ["load", "-i", "/dev/null"],
    }
    for what, args in attempts.items():
        done = docker(*args)
        assert done.returncode != 0, what
        assert "Stackyard's build proxy refused" in done.stderr, (what, done.stderr)
    # The CLI fetches a URL context itself; an API client can ask the engine to (remote=).
    remote = subprocess.run(
        ["curl", "-s", "--unix-socket", str(docker.socket.path), "-X", "POST",
         "http://docker/v1.41/build?remote=http://127.0.0.1:2019/config/"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert "refused docker build from a URL" in json.loads(remote)["message"]
    after = docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest").stdout
    assert after == busybox
    catalog = subprocess.run(
        ["curl", "-s", "-u", f"{live_registry.username}:{live_registry.password}",
         f"http://{live_registry.endpoint}/v2/victim/tags/list"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert "NAME_UNKNOWN" in catalog  # nothing reached the victim's repository


def test_a_dockerfile_naming_another_stack_s_local_image_is_refused(
    build_docker: BuildDocker, live_registry: LiveRegistry, tmp_path: Path
) -> None:
    """The engine resolves a local image by name, digest or id without asking the
    registry (where the build has no login): the proxy reads the Dockerfile from the
    context as it streams past and refuses such a build before the engine starts it."""
    docker, stack = build_docker, build_docker.stack
    victim = f"{live_registry.endpoint}/victim{secrets.token_hex(3)}:latest"
    victim_ctx = tmp_path / "victim"
    victim_ctx.mkdir()
    (victim_ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN echo s3cret > /secret\n")
    host = subprocess.run(  # the other stack's build, on the engine itself
        [DOCKER, "build", "--network", "host", "-q", "-t", victim, str(victim_ctx)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert host.returncode == 0, host.stderr
    try:
        victim_id = host.stdout.strip()
        attacks = {
            "by name": f"FROM {victim}\n",
            "by id": f"FROM {victim_id}\n",
            "by short id": f"FROM {victim_id.removeprefix('sha256:')[:12]}\n",
            "copy --from": f"ARG B=busybox:latest\nFROM $B AS b\nCOPY --from={victim_id} "
            "/secret /s\n",
        }
        for what, dockerfile in attacks.items():
            ctx = context(tmp_path, dockerfile)
            for compress in ([], ["--compress"]):
                done = docker("build", "--network", "host", *compress, "-t", f"{stack}-x", str(ctx))
                assert done.returncode != 0, (what, done.stdout)
                assert "Stackyard's build proxy refused the build: Dockerfile line" in done.stderr
                assert "another stack" in done.stderr, (what, done.stderr)
        # The CLI writes one entry per file; a tar may hold two: the engine takes the last.
        body = tmp_path / "two.tar"
        with tarfile.open(body, "w") as tar:
            for text in ("FROM busybox:latest\n", f"FROM {victim_id}\n"):
                info = tarfile.TarInfo("Dockerfile")
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text.encode()))
        raw = subprocess.run(
            ["curl", "-s", "--unix-socket", str(docker.socket.path), "-X", "POST",
             "-H", "Content-Type: application/x-tar", "--data-binary", f"@{body}",
             f"http://docker/v1.41/build?t={stack}-two&networkmode=host"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        assert "line 1 (FROM sha256:" in json.loads(raw)["message"]
        assert docker("image", "inspect", f"{stack}-x").returncode != 0  # nothing was built
        assert docker("image", "inspect", f"{stack}-two").returncode != 0
        ctx = context(tmp_path, "FROM busybox:latest AS base\nFROM base\nCOPY --from=base / /\n")
        fine = docker("build", "--network", "host", "--compress", "-t", f"{stack}-ok", str(ctx))
        assert fine.returncode == 0, fine.stderr  # stages and base images are read
        after = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Id}}", victim],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert after.stdout.strip() == victim_id
    finally:
        subprocess.run([DOCKER, "rmi", "-f", victim], capture_output=True, timeout=120)


def test_a_buildkit_build_goes_through_its_session_and_keeps_the_proxy_s_rules(
    build_docker: BuildDocker, live_registry: LiveRegistry, tmp_path: Path
) -> None:
    docker, stack = build_docker, build_docker.stack
    docker.socket.nest_builds_in("/docker/holder")  # the engine's cgroupfs driver
    own = f"{live_registry.endpoint}/{stack}"
    ctx = context(tmp_path, "FROM busybox:latest\nRUN grep pids: /proc/self/cgroup\n")
    kit = ["--buildkit", "build", "--progress", "plain", "--no-cache", "--network", "host"]

    with kept_buildkit_budget():
        built = docker(*kit, "-t", f"{own}:kit", str(ctx))
        assert built.returncode == 0, built.stderr
        assert "pids:/docker/buildkit/" in built.stderr  # BuildKit's own cgroup ...
        assert budget_value("pids/docker/buildkit/pids.max") == "256"  # ... held to the limits
        pushed = docker("push", f"{own}:kit")
        assert pushed.returncode == 0, pushed.stderr
        assert live_registry.skopeo_digest(stack, "kit").startswith("sha256:")
        out = tmp_path / "out"
        local = docker(*kit, "--output", f"type=local,dest={out}", str(ctx))
        assert local.returncode == 0, local.stderr
        assert (out / "bin" / "busybox").exists()  # the output came back to the client
        # The image id a quiet build prints (read from BuildKit's answer) is the build's own.
        quiet = docker("--buildkit", "build", "-q", "--network", "host", str(ctx))
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stdout.strip().startswith("sha256:"), quiet.stdout
        tagged = docker("tag", quiet.stdout.strip(), f"{own}:x")
        assert tagged.returncode == 0, tagged.stderr

        victim = f"{live_registry.endpoint}/victim:latest"
        attempts = {
            "a foreign tag": (["-t", victim], "another stack's repository"),
            "a pushing output": (
                ["--output", f"type=image,name={victim},push=true"],
                "--output type=image",
            ),
            "a registry output": (["--output", f"type=registry,ref={victim}"], "type=registry"),
        }
        for what, (args, words) in attempts.items():
            done = docker(*kit, *args, str(ctx))
            assert done.returncode != 0, what
            assert "Stackyard's build proxy refused" in done.stderr, (what, done.stderr)
            assert words in done.stderr, (what, done.stderr)
        # An empty Dockerfile is read through the session too: the engine's own message.
        empty = docker(*kit, str(context(tmp_path, "")))
        assert empty.returncode != 0
        assert "the Dockerfile cannot be empty" in empty.stderr, empty.stderr
        assert "Stackyard's build proxy refused" not in empty.stderr
    # Every session ends with its build: the CLI closes it as it exits, and the proxy's
    # loop sees that a moment later.
    deadline = time.monotonic() + 10
    while docker.socket.relays and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not docker.socket.relays


def test_a_buildkit_build_s_dockerfile_naming_another_stack_s_local_image_is_refused(
    build_docker: BuildDocker, live_registry: LiveRegistry, tmp_path: Path
) -> None:
    """BuildKit reads local images too, by name or digest: the proxy reads the Dockerfile
    the CLI sends on the session and holds its end until the same judge passed it."""
    docker, stack = build_docker, build_docker.stack
    docker.socket.nest_builds_in("/docker/holder")  # the engine's cgroupfs driver
    victim_repo = f"{live_registry.endpoint}/victim{secrets.token_hex(3)}"
    victim = f"{victim_repo}:latest"
    victim_ctx = tmp_path / "victim"
    victim_ctx.mkdir()
    (victim_ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN echo s3cret > /secret\n")
    live_registry.docker("build", "--network", "host", "-q", "-t", victim, str(victim_ctx))
    live_registry.docker("push", victim)  # the engine now knows it by digest too
    digest = live_registry.docker("image", "inspect", "-f", "{{index .RepoDigests 0}}", victim)
    kit = ["--buildkit", "build", "--progress", "plain", "--network", "host"]
    try:
        attacks = {
            "by name": (f"FROM {victim}\n", "line 1 (FROM"),
            "by digest": (f"FROM {digest.strip()}\n", "line 1 (FROM"),
            "copy --from": (f"FROM busybox:latest\nCOPY --from={victim} /secret /s\n", "line 2"),
            "run --mount": (
                f"FROM busybox:latest\nRUN --mount=type=bind,from={victim},target=/v cat "
                "/v/secret\n",
                "line 2",
            ),
        }
        with kept_buildkit_budget():
            for what, (dockerfile, line) in attacks.items():
                done = docker(*kit, "-t", f"{stack}-x", str(context(tmp_path, dockerfile)))
                assert done.returncode != 0, (what, done.stdout)
                assert f"Stackyard's build proxy refused the build: Dockerfile {line}" in (
                    done.stderr
                ), (what, done.stderr)
                assert "another stack" in done.stderr, (what, done.stderr)
                assert "s3cret" not in done.stderr + done.stdout
            custom = docker(*kit, str(context(tmp_path, "# syntax=busybox\nFROM busybox\n")))
            assert custom.returncode != 0
            assert "line 1 (# syntax=busybox) names a Dockerfile frontend" in custom.stderr
            syntax = ["--build-arg", "BUILDKIT_SYNTAX=busybox"]
            forwarded = docker(*kit, *syntax, str(ctx_ok(tmp_path)))
            assert "build-arg BUILDKIT_SYNTAX" in forwarded.stderr
            fine = docker(*kit, "-t", f"{stack}-ok", str(ctx_ok(tmp_path)))
            assert fine.returncode == 0, fine.stderr  # stages and base images are read
        assert docker("image", "inspect", f"{stack}-x").returncode != 0  # nothing was built
        assert docker("image", "inspect", f"{stack}-ok").returncode == 0
    finally:
        subprocess.run([DOCKER, "rmi", "-f", victim], capture_output=True, timeout=120)


def ctx_ok(tmp_path: Path) -> Path:
    return context(tmp_path, "FROM busybox:latest AS base\nFROM base\nCOPY --from=base /bin/sh /\n")


def test_every_image_check_applies_one_rule_nameless_images_and_retagged_base_images(
    build_docker: BuildDocker, live_registry: LiveRegistry, tmp_path: Path
) -> None:
    """Whose an image is decides reads (tag, save, inspect, history, FROM), writes and the
    listing alike: another stack's image with no name (an intermediate of its legacy
    build, an image its tag moved off) is out of reach, an image this build made is its
    own with or without a name, and a base image stays everyone's whoever tagged it."""
    docker, stack, mark = build_docker, build_docker.stack, secrets.token_hex(3)
    victim, base = f"{live_registry.endpoint}/victim{mark}", f"sybase{mark}:latest"

    def host(*args: str) -> str:  # the other stack's builds and the operator, on the engine
        done = subprocess.run([DOCKER, *args], env={**os.environ, "DOCKER_BUILDKIT": "0"},
                              capture_output=True, text=True, timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    steps = f"FROM busybox:latest\nRUN echo s3cret{mark} > /secret\nRUN echo a >> /secret\n"
    moved = host(
        "build", "--network", "host", "-q", "-t", f"{victim}:v1", str(context(tmp_path, steps))
    )
    intermediate = host("image", "inspect", "-f", "{{.Parent}}", moved)
    again = steps.replace("echo a", "echo b")
    host("build", "--network", "host", "-q", "-t", f"{victim}:v1", str(context(tmp_path, again)))
    host("tag", "busybox:latest", f"{victim}:base")  # the other stack named a base image
    host("tag", "busybox:latest", base)  # a base image no stack named
    try:
        for image in (intermediate, moved):
            short = image.removeprefix("sha256:")[:12]
            saved = str(tmp_path / "x.tar")
            for args in (["tag", short, f"{stack}-copy"], ["save", "-o", saved, image],
                         ["image", "inspect", image], ["history", image]):  # fmt: skip
                done = docker(*args)
                assert done.returncode != 0, args
                assert "has no name and this build did not make it" in done.stderr, done.stderr
            done = docker("build", "--network", "host", str(context(tmp_path, f"FROM {short}\n")))
            assert "line 1 (FROM " in done.stderr, done.stderr
            assert "has no name" in done.stderr
        listed = docker("images", "-a", "-q", "--no-trunc").stdout.split()
        assert moved not in listed
        assert intermediate not in listed
        assert victim not in docker("images", "--format", "{{.Repository}}").stdout
        # A base image another stack also tagged is still busybox: readable by every stack.
        for args in (["image", "inspect", "busybox:latest"], ["history", "busybox:latest"],
                     ["save", "-o", str(tmp_path / "b.tar"), "busybox:latest"],
                     ["tag", "busybox:latest", f"{stack}-base"]):  # fmt: skip
            done = docker(*args)
            assert done.returncode == 0, (args, done.stderr)
        assert "another stack's" in docker("image", "inspect", f"{victim}:base").stderr
        # ... and shows none of that stack's names (the listing hides them too).
        seen = docker("image", "inspect", "-f", "{{json .RepoTags}}", "busybox:latest").stdout
        assert "busybox:latest" in json.loads(seen), seen
        assert victim not in seen, seen
        tags = subprocess.run(
            ["curl", "-s", "--unix-socket", str(docker.socket.path),
             "http://docker/v1.41/images/busybox:latest/history"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        assert "busybox:latest" in tags, tags
        assert victim not in tags, tags
        assert victim in host("image", "inspect", "-f", "{{json .RepoTags}}", "busybox:latest")
        # `IMAGE=$(docker build -q .)`: the build's own image, name or not.
        mine = docker(
            "build", "--network", "host", "-q", str(context(tmp_path, steps + "RUN true\n"))
        )
        own = mine.stdout.strip()
        assert mine.returncode == 0, mine.stderr
        assert own.startswith("sha256:"), own
        for args in (["image", "inspect", own], ["tag", own, f"{stack}-mine"]):
            assert docker(*args).returncode == 0, args
        assert own in docker("images", "-q", "--no-trunc").stdout.split()
        built = docker("build", "--network", "host", "-t", f"{stack}-on-mine",
                       str(context(tmp_path, f"FROM {own}\n")))  # fmt: skip
        assert built.returncode == 0, built.stderr
        # The stack's name on a base image does not make the base image's name the stack's.
        base_id = host("image", "inspect", "-f", "{{.Id}}", base)
        assert docker("tag", base, f"{live_registry.endpoint}/{stack}:base").returncode == 0
        for args in (["tag", f"{stack}-mine", base], ["rmi", base], ["rmi", "-f", base_id]):
            done = docker(*args)
            assert done.returncode != 0, args
            assert "Stackyard's build proxy refused" in done.stderr, args
        assert host("image", "inspect", "-f", "{{.Id}}", base) == base_id
        # A name the engine cannot parse: its line and the engine's reason.
        done = docker("build", "--network", "host", str(context(tmp_path, "FROM BusyBox:latest\n")))
        assert "Dockerfile line 1 (FROM BusyBox:latest) names BusyBox:latest" in done.stderr
        assert "must be lowercase" in done.stderr, done.stderr
        done = docker("image", "inspect", "BusyBox:latest")  # the engine's own answer
        assert "Error response from daemon: " in done.stderr, done.stderr
        assert "must be lowercase" in done.stderr, done.stderr
    finally:
        subprocess.run([DOCKER, "rmi", "-f", f"{victim}:v1", f"{victim}:base", base, moved,
                        f"{live_registry.endpoint}/{stack}:base"],
                       capture_output=True, timeout=120)  # fmt: skip


def host_docker(*args: str) -> str:
    """The docker CLI on the engine itself (the operator, another stack's build)."""
    done = subprocess.run([DOCKER, *args], env={**os.environ, "DOCKER_BUILDKIT": "0"},
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_pulled_base_image_s_onbuild_triggers_are_judged_before_the_build(
    build_docker: BuildDocker,
    live_registry: LiveRegistry,
    second_live_registry: LiveRegistry,
    tmp_path: Path,
) -> None:
    """A FROM the engine does not hold would be pulled by the engine during the build,
    and its ONBUILD triggers run unjudged: the proxy pulls it first, with the build's own
    login for that registry, and judges the triggers as for a local base image."""
    docker, stack, bases = build_docker, build_docker.stack, second_live_registry
    victim = f"{live_registry.endpoint}/victim{secrets.token_hex(3)}:latest"
    victim_id = host_docker("build", "--network", "host", "-q", "-t", victim, str(context(
        tmp_path, "FROM busybox:latest\nRUN echo s3cret > /secret\n")))  # fmt: skip
    hostile = {
        "by name": f"ONBUILD COPY --from={victim} /secret /stolen",
        "by id": f"ONBUILD COPY --from={copy_from_id(victim_id)} /secret /stolen",
    }
    pushed = {what: f"{bases.endpoint}/bases/{stack}-{n}:v1" for n, what in enumerate(hostile)}
    pushed["harmless"] = f"{bases.endpoint}/bases/{stack}-harmless:v1"
    pushed["copies a base"] = f"{bases.endpoint}/bases/{stack}-copies:v1"
    triggers = {
        **hostile,
        "harmless": "ONBUILD RUN touch /ran",
        # BuildKit 0.8 (Docker 20.10) finds nothing at a trigger's COPY --from of an image,
        # with or without the proxy (measured): the legacy builder only.
        "copies a base": "ONBUILD COPY --from=busybox:latest /bin/busybox /ran",
    }
    try:
        for what, name in pushed.items():
            base = context(tmp_path, f"FROM busybox:latest\n{triggers[what]}\n")
            bases.docker("build", "--network", "host", "-q", "-t", name, str(base))
            bases.docker("push", name)
            host_docker("rmi", name)  # the engine does not hold it: the build would pull it
        missing = f"{bases.endpoint}/bases/{stack}-missing:v1"
        # Unjudged, a hostile trigger's build goes through and prints the other's secret.
        builds = {what: f"FROM {name}\nRUN cat /stolen\n" for what, name in pushed.items()}
        for what in ("harmless", "copies a base"):
            builds[what] = f"FROM {pushed[what]}\nRUN test -f /ran\n"
        builds["missing"] = f"FROM busybox:latest AS a\nFROM {missing}\n"

        anonymous = docker("build", "--network", "host", str(context(tmp_path, builds["by id"])))
        assert f"Dockerfile line 1 (FROM {pushed['by id']}) builds from" in anonymous.stderr
        assert "the proxy's pull of it failed" in anonymous.stderr, anonymous.stderr
        login = docker("login", "-u", bases.username, "--password-stdin", bases.endpoint,
                       stdin=bases.password)  # fmt: skip
        assert login.returncode == 0, login.stderr

        for what in hostile:
            for pull in ([], ["--pull"]):
                done = docker("build", "--network", "host", *pull, "-t", f"{stack}-x",
                              str(context(tmp_path, builds[what])))  # fmt: skip
                assert done.returncode != 0, (what, done.stdout)
                assert (
                    f"refused the build: Dockerfile line 1 (FROM {pushed[what]}, whose image "
                    f"runs ONBUILD {hostile[what].removeprefix('ONBUILD ')}) reads "
                ) in done.stderr, (what, done.stderr)
                assert "another stack" in done.stderr, done.stderr
        gone = docker("build", "--network", "host", str(context(tmp_path, builds["missing"])))
        said = f"Dockerfile line 2 (FROM {missing}) builds from {missing}, which the engine "
        assert said + "does not hold, and the proxy's pull of it failed: " in gone.stderr
        assert "unknown" in gone.stderr.lower(), gone.stderr
        assert docker("image", "inspect", f"{stack}-x").returncode != 0  # nothing was built
        assert host_docker("image", "inspect", "-f", "{{.Id}}", victim) == victim_id
        for what in ("harmless", "copies a base"):
            fine = docker("build", "--network", "host", "-t", f"{stack}-fine",
                          str(context(tmp_path, builds[what])))  # fmt: skip
            assert fine.returncode == 0, fine.stderr  # its trigger ran: /ran is there
            assert "Pulling from" not in fine.stdout  # the engine built from the proxy's pull
        # BuildKit resolves a FROM the engine lacks itself, with the CLI's login over the
        # session, and runs its triggers too: the proxy pulls it first as well.
        docker.socket.nest_builds_in("/docker/holder")  # the engine's cgroupfs driver
        kit = ["--buildkit", "build", "--progress", "plain", "--network", "host"]
        with kept_buildkit_budget():
            for what in ("by name", "harmless"):
                host_docker("rmi", pushed[what])
                # The CLI sends BuildKit builds no login: pulled anonymously, refused.
                done = docker(*kit, str(context(tmp_path, builds[what])))
                assert done.returncode != 0, done.stderr
                assert "the proxy's pull of it failed" in done.stderr, done.stderr
                assert "no basic auth credentials" in done.stderr, done.stderr
                pulled = docker("pull", pushed[what])  # with the CLI's login: then judged
                assert pulled.returncode == 0, pulled.stderr
            refused = docker(*kit, str(context(tmp_path, builds["by name"])))
            assert "runs ONBUILD COPY --from=" in refused.stderr, refused.stderr
            assert "that is another stack's repository" in refused.stderr, refused.stderr
            kept = docker(*kit, str(context(tmp_path, builds["harmless"])))
            assert kept.returncode == 0, kept.stderr
    finally:
        subprocess.run([DOCKER, "rmi", "-f", victim], capture_output=True, timeout=120)
