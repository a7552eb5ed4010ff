"""In-process signals that a log grew, or that the operation it belongs to ended.

Whoever waits for a log line or for a build, deployment or run to end (the SSE log stream,
a pipeline run waiting for its build) would otherwise poll, and notice each change up to
one poll interval late. A signal's topic is the log's path: every line written notifies
it, and the service that records the operation's end ends it.

Waiters still bound each wait by their old poll interval, so a change nobody signalled
(another process, a restart) is seen within that time.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

Topic = str | os.PathLike[str]  # a log's path; written as a str or a Path, it is one topic

KEEP = 10_000  # topics remembered; older ones fall back to the waiters' polling

_condition = threading.Condition()
_generations: OrderedDict[str, int] = OrderedDict()
_ended: OrderedDict[str, None] = OrderedDict()


def _key(topic: Topic) -> str:
    return str(Path(topic))


def _remember(table: OrderedDict[str, int] | OrderedDict[str, None], topic: str) -> None:
    table.move_to_end(topic)
    while len(table) > KEEP:
        table.popitem(last=False)


def notify(topic: Topic) -> None:
    """The log at ``topic`` grew: wake whoever follows it."""
    topic = _key(topic)
    with _condition:
        _generations[topic] = _generations.get(topic, 0) + 1
        _remember(_generations, topic)
        _condition.notify_all()


def end(topic: Topic) -> None:
    """The operation whose log is ``topic`` has ended and its result is recorded."""
    topic = _key(topic)
    with _condition:
        _ended[topic] = None
        _remember(_ended, topic)
    notify(topic)


def ended(topic: Topic) -> bool:
    topic = _key(topic)
    with _condition:
        return topic in _ended


def generation(topic: Topic) -> int:
    """The topic's generation; take it before looking, pass it to :func:`wait` after."""
    topic = _key(topic)
    with _condition:
        return _generations.get(topic, 0)


def wait(topic: Topic, seen: int, timeout: float) -> bool:
    """Block until ``topic`` moves past ``seen`` or ``timeout`` passes; True if it moved."""
    topic = _key(topic)
    with _condition:
        return _condition.wait_for(lambda: _generations.get(topic, 0) != seen, timeout)


def wait_end(topic: Topic, timeout: float) -> bool:
    """Block until ``topic`` has ended or ``timeout`` passes; True if it ended."""
    topic = _key(topic)
    with _condition:
        return _condition.wait_for(lambda: topic in _ended, timeout)


def wait_any(moved: Mapping[Topic, int], ended: Iterable[Topic], timeout: float) -> bool:
    """Block until a topic of ``moved`` moves past its generation (taken before looking),
    a topic of ``ended`` has ended, or ``timeout`` passes; True unless it timed out."""
    seen = {_key(topic): generation for topic, generation in moved.items()}
    ends = [_key(topic) for topic in ended]

    def happened() -> bool:
        return any(_generations.get(t, 0) != g for t, g in seen.items()) or any(
            t in _ended for t in ends
        )

    with _condition:
        return _condition.wait_for(happened, timeout)
