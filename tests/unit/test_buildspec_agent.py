"""The build container's agent protocol, as bytes: requests, frames, the fence, messages;
and the disk watch's decision, on real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stackyard.buildspec.agent import (
    AGENT_SCRIPT,
    END,
    Fence,
    Frames,
    Messages,
    run_request,
    stop_request,
)
from stackyard.buildspec.container import DiskWatch


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_a_request_ends_with_its_token_line() -> None:
    assert run_request("T", "/bin/sh", "echo a\necho b") == b"run T /bin/sh\necho a\necho b\nT\n"
    assert stop_request([12, 40]) == b"stop 12 40\n"


def test_frames_are_split_whatever_the_reads() -> None:
    data = frame(1, b"hello ") + frame(2, b"pid 7\n") + frame(1, b"world")
    frames = Frames()
    got = [item for byte in data for item in frames.feed(bytes([byte]))]
    assert got == [(1, b"hello "), (2, b"pid 7\n"), (1, b"world")]


def test_the_fence_ends_the_output_even_split_across_frames() -> None:
    fence = Fence("TOKEN", carried=b"late ")
    out = fence.feed(b"line\npartial") + fence.feed(b"\nTO") + fence.feed(b"KEN\nafter")
    assert out == b"late line\npartial"
    assert fence.reached
    assert fence.after == b"after"
    assert fence.feed(b" more") == b""
    assert fence.after == b"after more"


def test_output_that_only_looks_like_the_fence_start_is_released() -> None:
    fence = Fence("TOKEN")
    assert fence.feed(b"a\nTOK") == b"a"
    assert fence.feed(b"ENS\n") == b"\nTOKENS"  # a newline may start the fence: held
    assert fence.feed(b"x") == b"\nx"
    assert not fence.reached


def test_messages_carry_pid_state_exports_and_status() -> None:
    messages = Messages()
    messages.feed(b"ready /root\n")
    reply = messages.next_reply()
    state = b"0\x00/src\x00A\x00\x00B\x001\x00"  # A is empty: two NULs in a row
    stream = b"pid 42\nstate\n" + state + END + b"export A\n" + END + b"exit 3\n"
    for byte in stream:
        messages.feed(bytes([byte]))
    assert reply.ready
    assert reply.home == "/root"
    assert (reply.pid, reply.state, reply.exports, reply.status) == (42, state, b"export A\n", 3)
    nothing = messages.next_reply()
    messages.feed(b"pid 5\nstate\nnone" + END + END + b"exit 0\nstopped 5\nstopped-all\n")
    assert (nothing.state, nothing.exports, nothing.status) == (None, None, 0)
    assert (nothing.stopped, nothing.stopped_all) == ([5], True)


def test_the_agent_script_is_posix_sh() -> None:
    for shell in ("/bin/sh", "/bin/bash"):
        done = subprocess.run([shell, "-n", "-c", AGENT_SCRIPT], capture_output=True, timeout=10)
        assert done.returncode == 0, done.stderr


def test_the_disk_watch_stops_a_build_that_wrote_more_than_its_limit(tmp_path: Path) -> None:
    stopped: list[bool] = []
    watch = DiskWatch([tmp_path], limit=1024 * 1024, stop=lambda: stopped.append(True))
    watch._baseline = {device: 0 for device in watch._baseline}  # as if the disk just filled
    (tmp_path / "small").write_bytes(b"x" * 100_000)
    assert not watch.check()  # the disk grew, but the build's own files are under the limit
    (tmp_path / "big").write_bytes(b"x" * 2 * 1024 * 1024)
    assert watch.check()
    assert stopped == [True]
    assert watch.exceeded is not None
    assert "over its limit of 1 MiB" in watch.exceeded


def test_the_disk_watch_walks_nothing_while_the_disk_has_not_grown(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 2 * 1024 * 1024)
    watch = DiskWatch([tmp_path], limit=1024 * 1024, stop=lambda: None)
    watch._baseline = {device: size + 10 * 1024**3 for device, size in watch._used().items()}
    assert not watch.check()


def test_the_agent_s_own_errors_are_kept_apart_from_its_messages() -> None:
    messages = Messages()
    messages.feed(b"ready /root\npid 12\nsh: 1: Cannot fork\nexit 2\n")
    assert messages.reply.ready
    assert messages.reply.pid == 12
    assert messages.reply.status == 2
    assert messages.errors == ["sh: 1: Cannot fork"]
    for n in range(7):
        messages.feed(f"error {n}\n".encode())
    assert messages.errors == [f"error {n}" for n in range(2, 7)]  # the last five


def test_an_agent_that_could_not_fork_is_heard_even_mid_state_dump() -> None:
    messages = Messages()
    messages.feed(b"ready /root\npid 12\n")
    assert not messages.could_not_fork()
    messages.feed(b"state\nsh: 14: Cannot fork\n")  # the dump's cat could not start
    assert messages.could_not_fork()
    busybox = Messages()
    busybox.feed(b"sh: can't fork: Resource temporarily unavailable\n")
    assert busybox.could_not_fork()
    named = Messages()
    named.feed(b"state\nFORKS\x00forklift\x00")  # a variable's value is no error
    assert not named.could_not_fork()
