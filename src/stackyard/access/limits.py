"""Rate limits on failed authentication, per client address and per token id.

One ``FailureLimiter`` serves the API, the git remote and the console's login form:
after ``limit`` wrong tokens within ``window`` seconds from one address (or naming one
token id), that key is refused with 429 until the oldest of them is ``window`` old, even
with the right token. Tokens have 256 random bits, so guessing was never practical; the
limit keeps attempts slow and loud (each is in the audit log too). A success does not
clear the count: someone with one valid token could otherwise reset it between guesses.
"""

from __future__ import annotations

import threading
import time

LIMIT = 5
WINDOW = 60.0
MAX_KEYS = 10_000


class FailureLimiter:
    def __init__(self, limit: int = LIMIT, window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def wait(self, *keys: str, now: float | None = None) -> float:
        """Seconds before the keys may try again (0: now): the longest of their waits."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return max((self._wait(key, now) for key in keys), default=0.0)

    def _wait(self, key: str, now: float) -> float:
        recent = [t for t in self._failures.get(key, []) if now - t < self.window]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        if len(recent) < self.limit:
            return 0.0
        return self.window - (now - recent[-self.limit])

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, []).append(now)
            while len(self._failures) > MAX_KEYS:  # many clients: forget the oldest
                self._failures.pop(next(iter(self._failures)))


def address_key(address: str) -> str:
    return f"address {address}"


def token_key(token_id: str) -> str:
    return f"token {token_id}"
