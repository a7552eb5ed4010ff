"""Taking an earlier keeper's responder socket (pidfd_getfd): what is queued on it stays."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from stackyard.platform.keeper import take_udp_socket

HOLDER = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
time.sleep(60)
"""


def test_a_datagram_queued_on_a_killed_processs_socket_is_read_by_the_taker() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        taken = take_udp_socket(holder.pid, port)
        assert taken is not None
        with taken, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"queued", ("127.0.0.1", port))  # the holder never reads it
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
            client.sendto(b"after", ("127.0.0.1", port))
            taken.settimeout(5)
            assert taken.recvfrom(100)[0] == b"queued"
            assert taken.recvfrom(100)[0] == b"after"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_port_nobody_holds_gives_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert take_udp_socket(os.getpid(), port) is None
