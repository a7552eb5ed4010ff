"""The BuildKit budget: the limits the proxy gives the engine's BuildKit cgroup, written
into a cgroup v1 tree laid out as files under a temporary root."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.errors import ComponentError
from stackyard.images.dockerproxy.budget import hold_buildkit_steps
from stackyard.images.dockerproxy.rules import BuildLimits

LIMITS = BuildLimits(cpus=1.5, memory=512 * 1024**2, pids=128, cpu_shares=128)


def cgroup_v1(root: Path, *, swap: str | None = None) -> Path:
    for name in ("pids", "memory", "cpu"):
        (root / name / "docker" / "buildkit").mkdir(parents=True)
    if swap is not None:
        (root / "memory" / "docker" / "buildkit" / "memory.memsw.limit_in_bytes").write_text(swap)
    return root


def read(root: Path, controller: str, name: str) -> str:
    return (root / controller / "docker" / "buildkit" / name).read_text()


def test_the_buildkit_cgroup_gets_the_build_s_limits(tmp_path: Path) -> None:
    root = cgroup_v1(tmp_path, swap="9223372036854771712")

    hold_buildkit_steps(LIMITS, root)

    assert read(root, "pids", "pids.max") == "128"
    assert read(root, "memory", "memory.limit_in_bytes") == str(512 * 1024**2)
    assert read(root, "memory", "memory.memsw.limit_in_bytes") == str(512 * 1024**2)
    assert read(root, "cpu", "cpu.shares") == "128"
    assert (read(root, "cpu", "cpu.cfs_period_us"), read(root, "cpu", "cpu.cfs_quota_us")) == (
        "100000",
        "150000",
    )


def test_a_host_without_cgroup_v1_holds_no_buildkit_steps(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()  # cgroup v2: one tree, no per-controller hierarchies
    with pytest.raises(ComponentError, match="no cgroup v1"):
        hold_buildkit_steps(LIMITS, tmp_path)


def test_a_limit_the_kernel_refuses_is_an_error_naming_it(tmp_path: Path) -> None:
    root = cgroup_v1(tmp_path)
    (root / "pids" / "docker" / "buildkit" / "pids.max").mkdir()  # cannot be written
    with pytest.raises(ComponentError, match=r"pids\.max"):
        hold_buildkit_steps(LIMITS, root)
