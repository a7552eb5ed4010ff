"""Whether a local TCP port is free: the one check the platform's start-up and the deploy
controller (task and stage ports) both use before they pick a port.

Standard library only, so that any layer may import it.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` (a bind there succeeds).

    ``SO_REUSEADDR`` lets a port whose last connection is in TIME_WAIT count as free, as
    the servers that will bind it do.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
