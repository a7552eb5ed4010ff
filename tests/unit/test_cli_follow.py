"""Following a log notices new lines and the end of the operation within 0.1 s."""

from __future__ import annotations

from typing import Any

from stackyard.cli.client import ApiClient
from stackyard.cli.follow import follow_log


class ScriptedApi(ApiClient):
    """An ApiClient whose log endpoint answers from a script of chunks, with no server."""

    def __init__(self, chunks: list[tuple[str, bool]]) -> None:
        super().__init__("http://127.0.0.1:0", "token")
        self.chunks = chunks
        self.offsets: list[int] = []

    def get(self, path: str, **kwargs: Any) -> Any:
        offset = kwargs["params"]["offset"]
        self.offsets.append(offset)
        text, finished = self.chunks.pop(0)
        return {"text": text, "offset": offset + len(text), "finished": finished}


def test_follow_waits_at_most_a_tenth_of_a_second_between_polls() -> None:
    api = ScriptedApi([("", False), ("", False), ("one\ntwo\n", False), ("", True)])
    lines: list[str] = []
    sleeps: list[float] = []
    follow_log(api, "/log", on_line=lines.append, sleep=sleeps.append)
    assert lines == ["one", "two"]
    assert sleeps == [0.1, 0.1]  # none after new text: the end is asked for at once
    assert api.offsets == [0, 0, 0, 8]


def test_follow_stops_when_finished_with_the_last_lines() -> None:
    api = ScriptedApi([("last\n", False), ("", True)])
    sleeps: list[float] = []
    follow_log(api, "/log", on_line=lambda line: None, sleep=sleeps.append)
    assert sleeps == []
