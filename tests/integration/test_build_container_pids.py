"""A build container that its process limit ended: the kernel's log still tells, once the
container and its cgroup are gone, that the limit refused a fork there."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from stackyard.images.build_container import BuildContainer, BuildContainerSpec
from stackyard.images.dockerproxy.rules import BuildLimits

pytestmark = pytest.mark.integration

# The shell's own next fork fails once the bomb holds every process: busybox sh then ends,
# and with it the container (its init's only child).
STARVED = "b() { b | b & }; b; sleep 5; echo survived"


@pytest.fixture
def container() -> Iterator[BuildContainer]:
    made = BuildContainer()
    try:
        yield made
    finally:
        made.remove()
        made.close()


def run_to_its_end(container: BuildContainer, script: str) -> None:
    spec = BuildContainerSpec(
        image="busybox:latest",
        name=f"sy-test-pids-{secrets.token_hex(4)}",
        command=["/bin/sh", "-c", script],
        limits=BuildLimits(cpus=0.5, memory=64 * 1024**2, pids=24),
    )
    container.create(spec)
    container.start()
    deadline = time.monotonic() + 60
    while container.end().running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not container.end().running


def test_a_container_its_process_limit_ended_is_known_to_have_hit_it(
    container: BuildContainer,
) -> None:
    run_to_its_end(container, STARVED)
    assert not container.end().oom_killed
    assert container.pids_limit_hits() is None  # its cgroup is gone with it
    assert container.forks_refused()


def test_a_container_that_ended_by_itself_hit_no_limit(container: BuildContainer) -> None:
    run_to_its_end(container, "exit 3")
    assert container.end().exit_code == 3
    assert not container.forks_refused()
