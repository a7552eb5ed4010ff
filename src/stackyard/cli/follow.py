"""Follow a stored log through the API until the operation it belongs to has finished."""

from __future__ import annotations

import time
from collections.abc import Callable

from stackyard.cli.client import ApiClient


def follow_log(
    client: ApiClient,
    path: str,
    *,
    on_line: Callable[[str], None],
    poll: float = 0.3,
    timeout: float = 3600.0,
) -> None:
    """Print ``path``'s log lines as they are written, until the server says it finished."""
    offset = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = client.get(path, params={"offset": offset})
        for line in chunk["text"].splitlines():
            on_line(line)
        offset = chunk["offset"]
        if chunk["finished"]:
            return
        if not chunk["text"]:
            time.sleep(poll)
