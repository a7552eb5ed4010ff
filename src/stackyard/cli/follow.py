"""Follow a stored log through the API until the operation it belongs to has finished.

``build``, ``release`` and ``deploy`` call ``follow_log`` when they wait for their operation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stackyard.cli.client import ApiClient

# How late a follower may notice new lines or the end. Short, since a poll only reads the
# log's new bytes; a command that waits for a 2 s build should not add 0.3 s to it.
POLL_SECONDS = 0.1


def follow_log(
    client: ApiClient,
    path: str,
    *,
    on_line: Callable[[str], None],
    poll: float = POLL_SECONDS,
    timeout: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print ``path``'s log lines as they are written, until the server says it finished.

    It asks again at once after new text, and ``poll`` seconds after none.
    """
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
            sleep(poll)
