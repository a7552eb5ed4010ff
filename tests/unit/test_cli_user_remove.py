"""`users remove` confirms at a terminal and, from a script, refuses without --yes."""

from __future__ import annotations

import io

import pytest

from stackyard.cli import people
from stackyard.errors import UsageError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_it_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(people.sys, "stdin", Terminal())
    monkeypatch.setattr(people.typer, "confirm", lambda text, **kwargs: asked.append(text))
    people._confirm_remove("carol")
    assert asked == ["Remove carol and revoke every token of theirs?"]


def test_without_a_terminal_it_points_to_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(people.sys, "stdin", io.StringIO())
    with pytest.raises(UsageError) as refused:
        people._confirm_remove("carol")
    assert refused.value.exit_code == 2
    assert "removing carol revokes every token of theirs" in str(refused.value)
    assert refused.value.hint == "confirm with: stackyard users remove carol --yes"
