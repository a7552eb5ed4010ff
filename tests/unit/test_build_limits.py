"""A stack's build limits (stackyard.yml ``build.cpu``, ``memory``, ``pids_limit``): they
lower the platform's, never raise them."""

from __future__ import annotations

import pytest

from stackyard.buildspec.isolation import BuildIsolation
from stackyard.config.models import BuildConfig
from stackyard.errors import ConfigError
from stackyard.images.dockerproxy.rules import BuildLimits
from stackyard.pipeline.builds.early import SpecPlan, spec_plan
from stackyard.source.fake import FakeSource

PLATFORM = BuildLimits(cpus=1.5, memory=4 * 1024**3, pids=2048, disk=10 * 1024**3)


def limits_of(build: BuildConfig) -> BuildLimits:
    isolation = BuildIsolation(None, limits=PLATFORM)
    return isolation.limits_for(cpu=build.cpu, memory=build.memory_bytes, pids=build.pids_limit)


def test_a_stack_lowers_the_platform_s_limits_where_it_asks() -> None:
    build = BuildConfig.model_validate({"cpu": 0.5, "memory": "512m", "pids_limit": 64})
    assert limits_of(build) == BuildLimits(
        cpus=0.5, memory=512 * 1024**2, pids=64, disk=PLATFORM.disk, cpu_shares=128
    )
    assert limits_of(BuildConfig.model_validate({"memory": "1g"})) == BuildLimits(
        cpus=1.5, memory=1024**3, pids=2048, disk=PLATFORM.disk
    )
    assert limits_of(BuildConfig()) == PLATFORM


@pytest.mark.parametrize(
    ("asked", "field", "limit"),
    [
        ({"cpu": 2}, "cpu", "1.5 cores"),
        ({"memory": "8g"}, "memory", "4 GiB"),
        ({"pids_limit": 4096}, "pids_limit", "2048 processes"),
    ],
)
def test_a_stack_cannot_raise_a_limit_and_is_told_who_can(
    asked: dict[str, object], field: str, limit: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        limits_of(BuildConfig.model_validate(asked))
    assert raised.value.message == (
        f"stackyard.yml: build.{field} asks for more than this platform's build limit of {limit}"
    )
    assert f"lower build.{field}" in (raised.value.hint or "")
    assert "stackyard up --build-" in (raised.value.hint or "")


def test_the_early_container_is_planned_with_the_stack_s_limits() -> None:
    source = FakeSource()
    url = "https://git.example/shop.git"
    sha = source.commit(
        url, {"build.yml": "version: 0.2\n", "stackyard.yml": "build: {pids_limit: 64}\n"}
    )
    source.resolve("shop", url, None, "main")
    plan = spec_plan(source, "shop", sha, ".", limits_of)
    assert plan == SpecPlan(
        None, BuildLimits(cpus=1.5, memory=4 * 1024**3, pids=64, disk=PLATFORM.disk)
    )
    too_many = FakeSource()
    sha = too_many.commit(
        url, {"build.yml": "version: 0.2\n", "stackyard.yml": "build: {cpu: 8}\n"}
    )
    too_many.resolve("shop", url, None, "main")
    assert spec_plan(too_many, "shop", sha, ".", limits_of) is None  # the build says why
