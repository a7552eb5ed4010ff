"""Reading the kernel's log from a point on, over a file laid out as /dev/kmsg's records."""

from __future__ import annotations

from pathlib import Path

from stackyard.images.kernel_log import (
    BUILDKIT_CGROUP,
    KernelLog,
    fork_rejected_in,
    forks_rejected_in,
)

CONTAINER = "4a44b10587595c8164042be4c80c4d083161d00a691d1ba913fa367fda747a0f"


def test_only_lines_written_after_the_log_was_opened_are_read(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_bytes(b"6,100,1,-;cgroup: fork rejected by pids controller in /docker/old\n")
    log = KernelLog(kmsg)
    with kmsg.open("ab") as out:
        out.write(f"6,101,2,-;cgroup: fork rejected by pids controller in /docker/{CONTAINER}\n"
                  " SUBSYSTEM=cgroup\n4,102,3,-;eth0: link up\n4,103,".encode())  # fmt: skip
    lines = log.lines()
    assert lines == [
        f"cgroup: fork rejected by pids controller in /docker/{CONTAINER}",
        "eth0: link up",
    ]
    with kmsg.open("ab") as out:
        out.write(b"4,-;the rest of a record read in two parts\n")
    assert log.lines() == ["the rest of a record read in two parts"]
    assert log.lines() == []
    log.close()


def test_a_refused_fork_is_told_by_its_container_s_id() -> None:
    said = [f"cgroup: fork rejected by pids controller in /docker/{CONTAINER}/step1"]
    assert fork_rejected_in(said, CONTAINER)
    assert not fork_rejected_in(said, "0" * 64)
    assert not fork_rejected_in([f"oom-kill in /docker/{CONTAINER}"], CONTAINER)


def test_buildkit_steps_refused_a_fork_are_counted_one_line_each() -> None:
    said = [
        "cgroup: fork rejected by pids controller in /docker/buildkit/lw0k0ll0s4f4mev3k",
        "cgroup: fork rejected by pids controller in /docker/buildkit/9x2b1q",
        f"cgroup: fork rejected by pids controller in /docker/{CONTAINER}",
        "oom-kill in /docker/buildkit/9x2b1q",
    ]
    assert forks_rejected_in(said, BUILDKIT_CGROUP) == 2
    assert forks_rejected_in(said[2:], BUILDKIT_CGROUP) == 0


def test_a_host_whose_kernel_log_cannot_be_read_says_nothing(tmp_path: Path) -> None:
    log = KernelLog(tmp_path / "missing")
    assert log.lines() == []
    log.close()
