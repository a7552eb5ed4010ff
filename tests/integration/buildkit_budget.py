"""The engine's BuildKit cgroup, as a test found it: the proxy writes the build limits
into it, and the engine is shared, so each test that runs a BuildKit build puts it back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

BUDGET = Path("/sys/fs/cgroup")
FILES = (
    "pids/docker/buildkit/pids.max",
    "cpu/docker/buildkit/cpu.shares",
    "cpu/docker/buildkit/cpu.cfs_quota_us",
    # memory with swap never below memory: restored last when raising, first when lowering
    "memory/docker/buildkit/memory.memsw.limit_in_bytes",
    "memory/docker/buildkit/memory.limit_in_bytes",
    "memory/docker/buildkit/memory.memsw.limit_in_bytes",
)


def budget_value(name: str) -> str:
    return (BUDGET / name).read_text().strip()


@contextlib.contextmanager
def kept_buildkit_budget() -> Iterator[None]:
    before = {name: budget_value(name) for name in FILES if (BUDGET / name).exists()}
    try:
        yield
    finally:
        for name in FILES:
            if name in before:
                with contextlib.suppress(OSError):  # memsw first may be below memory
                    (BUDGET / name).write_text(before[name])
