"""A process-wide signal that a log grew or an operation changed state.

Whoever waits for a log line or for a build, deployment or run to end (the SSE log stream,
the pipeline waiting for its build) would otherwise poll, and notice each change up to one
poll interval late. Writers call :func:`notify`; waiters remember :func:`generation` before
they look, then :func:`wait` for a newer one, with a timeout so that a writer that forgets to
notify (or another process) is still seen within that time.
"""

from __future__ import annotations

import threading
import time

MIN_GAP = 0.02  # the shortest pause: a chatty log elsewhere must not make a waiter spin

_condition = threading.Condition()
_generation = 0


def notify() -> None:
    """Something changed: wake every waiter."""
    global _generation
    with _condition:
        _generation += 1
        _condition.notify_all()


def generation() -> int:
    """The current generation; take it before looking, pass it to :func:`wait` after."""
    with _condition:
        return _generation


def wait(seen: int, timeout: float) -> int:
    """Block until the generation moves past ``seen``, or ``timeout`` seconds; return it."""
    with _condition:
        _condition.wait_for(lambda: _generation != seen, timeout)
        return _generation


def pause(seen: int, timeout: float, min_gap: float = MIN_GAP) -> float:
    """Wait as :func:`wait` does, but at least ``min_gap`` seconds; return the time waited.

    For loops that look again after each change: many changes a second elsewhere in the
    process (a chatty build log) wake them at most ``1 / min_gap`` times a second.
    """
    started = time.monotonic()
    wait(seen, timeout)
    waited = time.monotonic() - started
    if waited < min_gap:
        time.sleep(min_gap - waited)
        waited = min_gap
    return waited
