"""The kernel's log from a point on (``/dev/kmsg``): what the kernel said about a build
container's cgroup after the cgroup is gone.

The pids controller logs the first fork it refuses in each cgroup ("cgroup: fork rejected
by pids controller in /docker/<id>"). A fork bomb can starve a build container's shell,
which ends the container and removes its cgroup (and its ``pids.events``) within about
50 ms, before the platform reads it; the kernel's log line stays.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

KMSG = Path("/dev/kmsg")
_FORK_REJECTED = "fork rejected by pids controller in "
# BuildKit's RUN steps (Docker 20.10, cgroupfs) each run in a cgroup of their own here.
BUILDKIT_CGROUP = "/docker/buildkit/"
_READ_SIZE = 8192  # a /dev/kmsg record is at most about 1 KiB


class KernelLog:
    """The kernel's log lines written after this was made; nothing where this host's log
    cannot be read (not root, or no /dev/kmsg)."""

    def __init__(self, path: Path = KMSG) -> None:
        self._fd: int | None = None
        self._pending = b""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.lseek(fd, 0, os.SEEK_END)  # /dev/kmsg: from the next record on
        except OSError:
            os.close(fd)
            return
        self._fd = fd

    def lines(self) -> list[str]:
        """The messages logged since the last call (or since this was made)."""
        fd = self._fd
        if fd is None:
            return []
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break  # no more records
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten before read: go on
                    continue
                break
            if not data:
                break
            chunks.append(data)
        text = self._pending + b"".join(chunks)
        *whole, self._pending = text.split(b"\n")
        # A record is "priority,sequence,time,flags;message"; continuation lines start
        # with a space.
        return [
            line.partition(b";")[2].decode(errors="replace")
            for line in whole
            if b";" in line and not line.startswith(b" ")
        ]

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def fork_rejected_in(lines: list[str], cgroup_id: str) -> bool:
    """Whether ``lines`` say the pids controller refused a fork in the cgroup of
    ``cgroup_id`` (a container's id), or in one nested in it (a RUN step's)."""
    return forks_rejected_in(lines, cgroup_id) > 0


def forks_rejected_in(lines: list[str], cgroup: str) -> int:
    """How many cgroups whose path holds ``cgroup`` ``lines`` say the pids controller
    refused a fork in (the kernel logs the first refusal of each cgroup)."""
    return sum(_FORK_REJECTED in line and cgroup in line for line in lines)
