"""The router's warming handshake against a real TCP listener on loopback: a handshake that
no Caddy answered (the connection reset, as a reload's closed listener does) is made
again while the name is still a TLS name; one that Caddy answered, even with a TLS
alert, is not."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stackyard.router.base import Route
from stackyard.router.caddy import WARM_TRIES, CaddyRouter

from ..responder_table import responder_table

# A TLS record: a fatal internal_error alert, what Caddy sends when it refuses a name.
ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50])


class Listener:
    """Accepts connections: resets the first ``resets`` of them, then sends ALERT."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                self.accepted += 1
                conn.recv(4096)  # the ClientHello
                if self.accepted <= self.resets:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    conn.sendall(ALERT)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    """A real responder table behind its control socket (what the routers ask)."""
    with responder_table(tmp_path) as socket_path:
        yield socket_path


SHOP = Route("shop-prod", host="shop.test", tls="acme")


def warmed(router: CaddyRouter) -> None:
    """Warm SHOP and wait until every warming thread has ended."""
    router.warm(SHOP)
    for thread in threading.enumerate():
        if thread.name.startswith("warm "):
            thread.join(30)
            assert not thread.is_alive(), thread.name


@pytest.fixture
def rig(directory: Path, tmp_path: Path) -> Iterator[Callable[[int], tuple[Listener, CaddyRouter]]]:
    """Makes a listener that resets its first N connections, and a router whose HTTPS
    port is that listener's, SHOP's names in its responder; closes both after the test."""
    made: list[tuple[Listener, CaddyRouter]] = []

    def make(resets: int) -> tuple[Listener, CaddyRouter]:
        listener = Listener(resets)
        router = CaddyRouter([tmp_path / "admin.sock"], directory, https_port=listener.port)
        router.warm_pause = 0.05
        router.directory.set_hosts(SHOP.name, SHOP.hosts, SHOP.tls)
        made.append((listener, router))
        return listener, router

    yield make
    for listener, router in made:
        router.close()
        listener.close()


def test_a_handshake_no_caddy_answered_is_made_again(
    rig: Callable[[int], tuple[Listener, CaddyRouter]],
) -> None:
    listener, router = rig(1)
    warmed(router)
    assert listener.accepted == 2  # reset, then answered (an alert): done


def test_tries_are_bounded_and_stop_once_the_name_is_gone(
    rig: Callable[[int], tuple[Listener, CaddyRouter]],
) -> None:
    listener, router = rig(100)
    warmed(router)
    assert listener.accepted == WARM_TRIES
    router.directory.drop(SHOP.name)
    warmed(router)
    assert listener.accepted == WARM_TRIES + 1  # no second try for a name removed
