"""The BuildKit budget: the one cgroup every BuildKit RUN step of the engine runs in.

The engine's BuildKit (Docker 20.10) puts each RUN step in a cgroup of its own under
``/docker/buildkit`` (cgroup v1, cgroupfs driver) and ignores a build's cgroup parent,
memory and cpu options, so its steps would escape the build container's limits. Before the
build proxy passes a BuildKit build on, it gives that parent cgroup the build's limits:
all BuildKit RUN steps of the engine together get at most one build's cores, memory and
processes, at a build's cpu weight. Elsewhere (cgroup v2, the systemd driver) there is no
such parent to hold them, and BuildKit builds are refused.
"""

from __future__ import annotations

from pathlib import Path

from stackyard.errors import ComponentError
from stackyard.images.dockerproxy.rules import BuildLimits

CGROUP_ROOT = Path("/sys/fs/cgroup")
_PARENT = Path("docker") / "buildkit"
_CPU_PERIOD = "100000"


def hold_buildkit_steps(limits: BuildLimits, root: Path = CGROUP_ROOT) -> None:
    """Give the engine's BuildKit cgroup ``limits``; a ComponentError when this host has
    no such cgroup (not cgroup v1) or a limit cannot be set."""
    pids, memory, cpu = (root / name / _PARENT for name in ("pids", "memory", "cpu"))
    if not all((root / name).is_dir() for name in ("pids", "memory", "cpu")):
        raise ComponentError(
            f"BuildKit's RUN steps cannot be held to the build's limits: {root} has no "
            "cgroup v1 pids, memory and cpu hierarchies"
        )
    try:
        for directory in (pids, memory, cpu):
            directory.mkdir(parents=True, exist_ok=True)  # runc makes it on the first step
        _write(pids / "pids.max", str(limits.pids))
        _memory(memory, limits.memory)
        _write(cpu / "cpu.shares", str(limits.cpu_shares))
        _write(cpu / "cpu.cfs_period_us", _CPU_PERIOD)
        _write(cpu / "cpu.cfs_quota_us", str(limits.cpu_quota))
    except OSError as exc:
        raise ComponentError(
            f"BuildKit's RUN steps cannot be held to the build's limits: {exc}"
        ) from exc


def _memory(directory: Path, limit: int) -> None:
    """Memory, and memory with swap where the kernel counts swap (it must never be below
    memory: raise it first, lower it last)."""
    swap = directory / "memory.memsw.limit_in_bytes"
    if not swap.exists():
        _write(directory / "memory.limit_in_bytes", str(limit))
        return
    if limit > int(swap.read_text(encoding="ascii").strip() or 0):
        _write(swap, str(limit))
        _write(directory / "memory.limit_in_bytes", str(limit))
    else:
        _write(directory / "memory.limit_in_bytes", str(limit))
        _write(swap, str(limit))


def _write(path: Path, value: str) -> None:
    path.write_text(value, encoding="ascii")
