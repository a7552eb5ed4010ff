"""Stopping a thread that accepts connections on a listening socket, safely.

Closing a listener under a thread blocked in ``accept()`` does not wake that thread, and
the descriptor it was given may be reused at once: its next ``accept()`` can then land on
another test's socket. In one CI run a leaked relay of test_docker_builder.py took the
connections of a later test's webhook receiver and passed them to the Docker engine. A
``shutdown`` wakes the ``accept()`` (EINVAL, for TCP and unix sockets alike); the socket is
closed only once the thread has left.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress


def stop_accepting(listener: socket.socket, thread: threading.Thread) -> None:
    with suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    thread.join(timeout=10)
    listener.close()
    assert not thread.is_alive(), "the accepting thread did not stop"
