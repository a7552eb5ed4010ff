"""A TCP proxy on loopback that cuts the network: after ``budget`` bytes sent towards the
server it closes every connection and refuses new ones, until ``restore``.

Used to interrupt a real copy half way (a real registry behind it); the test stops it.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

from tests.integration.accepting import stop_accepting


class CuttingProxy:
    def __init__(self, upstream: tuple[str, int], budget: int) -> None:
        self.upstream = upstream
        self.budget = budget
        self.sent = 0
        self.cut = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._running = True
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restore(self) -> None:
        with self._lock:
            self.cut, self.budget = False, 1 << 62

    def stop(self) -> None:
        self._running = False
        stop_accepting(self._listener, self._accepting)
        self._close_all()

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            server = socket.create_connection(self.upstream, timeout=30)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                if upstream:
                    with self._lock:
                        allowed = max(self.budget - self.sent, 0)
                        self.sent += len(chunk)
                        if len(chunk) > allowed:
                            self.cut = True
                    if self.cut:
                        target.sendall(chunk[:allowed])
                        self._close_all()
                        return
                target.sendall(chunk)
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
