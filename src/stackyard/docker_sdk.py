"""One fix to the Docker SDK (docker-py), applied when a module that uses the SDK is imported.

docker-py 7's unix-socket connection does not close its socket when the connect fails
(docker/docker-py#3356, still open): each refused connect to an engine that is down (a
swarm node that died, a dockerd restarting, a target's engine gone) left an open file
descriptor until a garbage collection found it, and the platform asks such an engine again
every few seconds while it is away. The connect below is the SDK's own, closing its socket
when the connect fails.
"""

from __future__ import annotations

import socket

from docker.transport import unixconn


def _connect(self: unixconn.UnixHTTPConnection) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(self.timeout)
        sock.connect(self.unix_socket)
    except BaseException:
        sock.close()
        raise
    self.sock = sock


unixconn.UnixHTTPConnection.connect = _connect
