"""``FakeChannel``: an in-memory channel for unit tests of the code above the seam.

It keeps every message it was given, and can be told to fail the next tries (retryably
or not) or to hold each try until released, so a test can show that nothing waits for it.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from stackyard.channels.base import Channel, Destination, Message, check_url
from stackyard.errors import PermanentError, RetryableError


class FakeChannel(Channel):
    name: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self.sent: list[tuple[Message, Destination]] = []
        self.tries = 0
        self.fail_next = 0  # tries that fail with a RetryableError
        self.refuse = False  # every try fails with a PermanentError
        self.release = threading.Event()
        self.release.set()  # cleared: each try waits until it is set again
        self._lock = threading.Lock()

    def check(self, destination: Destination) -> None:
        check_url(destination.target, "the fake channel's URL")

    def deliver(self, message: Message, destination: Destination) -> str:
        self.release.wait(timeout=60)
        with self._lock:
            self.tries += 1
            if self.refuse:
                raise PermanentError("the fake receiver refused the message: HTTP 404")
            if self.fail_next > 0:
                self.fail_next -= 1
                raise RetryableError("the fake receiver answered HTTP 503")
            self.sent.append((message, destination))
        return "HTTP 200"
