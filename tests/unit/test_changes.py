"""The change signals: a log's followers wake on its lines and its end, without polling."""

from __future__ import annotations

import threading
from pathlib import Path

from stackyard import changes
from stackyard.api.routes.logs import follow_file


def test_wait_wakes_on_a_notify_of_its_topic_only(tmp_path: Path) -> None:
    mine, other = str(tmp_path / "a.log"), str(tmp_path / "b.log")
    seen = changes.generation(mine)
    changes.notify(other)
    assert changes.wait(mine, seen, 0.05) is False  # another log's line does not wake it
    threading.Timer(0.01, changes.notify, args=(mine,)).start()
    assert changes.wait(mine, seen, 30) is True


def test_wait_end_returns_once_the_topic_ended(tmp_path: Path) -> None:
    topic = str(tmp_path / "build.log")
    assert changes.wait_end(topic, 0.01) is False
    threading.Timer(0.01, changes.end, args=(topic,)).start()
    assert changes.wait_end(topic, 30) is True
    assert changes.ended(topic)


def test_a_follower_asks_the_store_at_first_and_at_the_end_not_per_line(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("one\n")
    state = {"finished": False, "asked": 0}

    def finished() -> bool:
        state["asked"] += 1
        return state["finished"]

    events = follow_file(str(log), finished)
    assert next(events) == 'event: line\ndata: "one"\n\n'
    with log.open("a") as handle:
        handle.write("two\n")
    changes.notify(str(log))
    assert next(events) == 'event: line\ndata: "two"\n\n'
    state["finished"] = True
    changes.end(str(log))
    assert next(events) == 'event: end\ndata: ""\n\n'
    assert state["asked"] == 2  # once at the start, once when the end was signalled


def test_wait_any_wakes_on_a_move_or_an_end_of_its_own_topics(tmp_path: Path) -> None:
    runs, build, other = (str(tmp_path / name) for name in ("runs", "build.log", "x.log"))
    seen = changes.generation(runs)
    changes.notify(build)  # a line of the build's log: not an end
    changes.notify(other)
    assert changes.wait_any({runs: seen}, [build], 0.05) is False
    threading.Timer(0.01, changes.notify, args=(runs,)).start()
    assert changes.wait_any({runs: seen}, [build], 30) is True
    seen = changes.generation(runs)
    threading.Timer(0.01, changes.end, args=(build,)).start()
    assert changes.wait_any({runs: seen}, [build], 30) is True
