"""A real responder table (router/directory.py) behind its control socket, in this
process: what a router's DirectoryClient talks to, for unit tests of the router's own
logic without Caddy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stackyard.control_socket import ControlServer
from stackyard.router.directory import UpstreamDirectory


@contextmanager
def responder_table(folder: Path) -> Iterator[Path]:
    """Serve a fresh table on ``<folder>/control.sock``; the socket's path."""
    table = UpstreamDirectory()
    server = ControlServer(folder / "control.sock", table.handlers())
    try:
        yield folder / "control.sock"
    finally:
        server.close()
        table.close()
