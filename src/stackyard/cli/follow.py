"""Follow a log live over the API's server-sent event stream, until it ends.

``build``, ``deploy`` and ``logs -f`` all follow this way: the server sends each line as it
is written and an ``end`` event once the build, release, deployment or run has finished, so
a command that waits for its operation returns as soon as it is over (no polling).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from stackyard.cli.client import ApiClient, Params


def follow_events(
    client: ApiClient, path: str, params: Params, *, on_line: Callable[[str], None]
) -> None:
    """Call ``on_line`` with each ``line`` event of the stream at ``path``, until ``end``."""
    for event, data in client.events(path, params={**params, "follow": True}):
        if event == "end":
            return
        if event == "line":
            on_line(json.loads(data))


def follow_log(
    client: ApiClient,
    stack: str,
    kind: str,
    number: int,
    *,
    stage: str | None = None,
    on_line: Callable[[str], None],
) -> None:
    """Follow the log of one build, release, deployment or run of ``stack``."""
    params: dict[str, str | int | bool | None] = {"kind": kind, "number": number, "stage": stage}
    follow_events(client, f"/api/v1/stacks/{stack}/logs", params, on_line=on_line)
