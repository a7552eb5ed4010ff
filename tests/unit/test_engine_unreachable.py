"""An engine that does not answer is named with the SDK's innermost reason, not its layers of
wrapping (requests' and urllib3's texts as the Docker SDK words them)."""

from __future__ import annotations

import pytest

from stackyard.engines.dockerapi import unreachable_reason

REFUSED = (
    "Error while fetching server API version: HTTPConnectionPool(host='127.0.0.1', port=1): "
    'Max retries exceeded with url: /version (Caused by NewConnectionError("HTTPConnection('
    "host='127.0.0.1', port=1): Failed to establish a new connection: [Errno 111] Connection "
    'refused"))'
)
NO_SOCKET = (
    "Error while fetching server API version: ('Connection aborted.', "
    "FileNotFoundError(2, 'No such file or directory'))"
)
TIMEOUT = "HTTPConnectionPool(host='127.0.0.1', port=4): Read timed out. (read timeout=1)"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (REFUSED, "[Errno 111] Connection refused"),
        (NO_SOCKET, "[Errno 2] No such file or directory"),
        (TIMEOUT, "Read timed out. (read timeout=1)"),
        ("something else entirely", "something else entirely"),
    ],
)
def test_the_reason_is_the_innermost_cause(text: str, reason: str) -> None:
    assert unreachable_reason(Exception(text)) == reason
