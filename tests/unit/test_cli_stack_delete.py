"""`stacks delete` asks for the stack's name at a terminal and refuses without one."""

from __future__ import annotations

import io

import pytest

from stackyard.cli import stacks
from stackyard.errors import UsageError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_the_name_must_be_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stacks.sys, "stdin", Terminal())
    monkeypatch.setattr(stacks.typer, "prompt", lambda *args, **kwargs: "shop")
    stacks._confirm_delete("shop")  # confirmed: no error
    monkeypatch.setattr(stacks.typer, "prompt", lambda *args, **kwargs: "shoe")
    with pytest.raises(UsageError, match="'shoe' is not 'shop': nothing was deleted"):
        stacks._confirm_delete("shop")


def test_without_a_terminal_it_points_to_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stacks.sys, "stdin", io.StringIO())
    with pytest.raises(UsageError) as refused:
        stacks._confirm_delete("shop")
    assert refused.value.hint == "confirm with: stackyard stacks delete shop --yes"
