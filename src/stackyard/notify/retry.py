"""When a delivery is tried again, and when it is given up: pure, tested by equality.

The delays double from ``first`` up to ``longest``; a receiver that asked for a longer
wait (HTTP 429 ``Retry-After``) gets it. A permanent refusal (a removed webhook, a refused
SMTP login) ends the delivery at once; a retryable one after ``attempts`` tries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    first: float = 5.0  # seconds before the second try
    factor: float = 2.0
    longest: float = 900.0  # the longest pause between two tries
    attempts: int = 12  # tries in all: about 1 h 40 min with the defaults

    def delay(self, attempts: int) -> float:
        """The pause after the ``attempts``-th failed try."""
        return min(self.first * self.factor ** max(attempts - 1, 0), self.longest)


@dataclass(frozen=True)
class Outcome:
    """How one try ended."""

    ok: bool
    detail: str
    retryable: bool = True
    retry_after: float | None = None  # the receiver's own wait (429)


@dataclass(frozen=True)
class Delivered:
    pass


@dataclass(frozen=True)
class RetryIn:
    seconds: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


Next = Delivered | RetryIn | GiveUp


def after_attempt(policy: RetryPolicy, attempts: int, outcome: Outcome) -> Next:
    """What follows the ``attempts``-th try (counting it) that ended with ``outcome``."""
    if outcome.ok:
        return Delivered()
    if not outcome.retryable:
        return GiveUp(f"refused for good: {outcome.detail}")
    if attempts >= policy.attempts:
        return GiveUp(f"gave up after {attempts} tries: {outcome.detail}")
    wait = policy.delay(attempts)
    if outcome.retry_after is not None:
        wait = max(wait, outcome.retry_after)
    return RetryIn(wait)
