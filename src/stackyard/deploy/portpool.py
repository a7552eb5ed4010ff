"""Ports the deploy controller hands out: one per task, and one per stage's route.

A task port is free on this machine, used by no task of the platform (their labels say
which) and not handed to a start still under way. A stage's route port is one no other
stage holds in the store, and free on this machine. Both are looked for from a random
port of their span on.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable

from stackyard.errors import StackyardError
from stackyard.ports import port_free


class TaskPorts:
    """Hands out task ports from ``span``; ``in_use`` says which the platform's tasks hold."""

    def __init__(self, span: tuple[int, int], in_use: Callable[[], set[int]]) -> None:
        self.span = span
        self._in_use = in_use
        self._lock = threading.Lock()
        self._reserved: set[int] = set()

    def allocate(self) -> int:
        """A free port, reserved until ``release`` (when the task's label holds it)."""
        low, high = self.span
        with self._lock:
            used = self._in_use() | self._reserved
            for port in _from_random_start(low, high):
                if port not in used and port_free(port):
                    self._reserved.add(port)
                    return port
        raise StackyardError(
            f"no free task port between {low} and {high}",
            hint="stop tasks or processes that hold ports in that range",
        )

    def release(self, port: int) -> None:
        with self._lock:
            self._reserved.discard(port)


def route_port(span: tuple[int, int], taken: Iterable[int]) -> int:
    """A port of ``span`` that no stage holds (``taken``) and nothing listens on, looked for
    from a random one on, as task ports are: two platforms on one machine that each pick a
    new stage's port before either's Caddy binds it rarely pick the same one (from the first
    free port on, both would)."""
    low, high = span
    held = set(taken)
    for port in _from_random_start(low, high):
        if port not in held and port_free(port):
            return port
    raise StackyardError(
        f"no free stage port between {low} and {high}",
        hint="set `port:` for the stage in stackyard.yml, or free a port in that range",
    )


def _from_random_start(low: int, high: int) -> list[int]:
    """Every port of the span, from a random one on: two platforms rarely pick the same."""
    start = low + secrets.randbelow(high - low + 1)
    return list(range(start, high + 1)) + list(range(low, start))
