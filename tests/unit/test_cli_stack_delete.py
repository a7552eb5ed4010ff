"""`stacks delete` and `stages remove` ask for the name at a terminal and refuse without
one (cli/shared.py ``confirm_by_name``)."""

from __future__ import annotations

import io

import pytest

from stackyard.cli import shared, stacks, stages
from stackyard.errors import UsageError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_the_name_must_be_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.sys, "stdin", Terminal())
    monkeypatch.setattr(shared.typer, "prompt", lambda *args, **kwargs: "shop")
    stacks._confirm_delete("shop")  # confirmed: no error
    monkeypatch.setattr(shared.typer, "prompt", lambda *args, **kwargs: "shoe")
    with pytest.raises(UsageError, match="'shoe' is not 'shop': nothing was deleted"):
        stacks._confirm_delete("shop")


def test_without_a_terminal_it_points_to_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.sys, "stdin", io.StringIO())
    with pytest.raises(UsageError) as refused:
        stacks._confirm_delete("shop")
    assert refused.value.hint == "confirm with: stackyard stacks delete shop --yes"


def test_a_stage_s_removal_asks_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.sys, "stdin", io.StringIO())
    with pytest.raises(UsageError) as refused:
        stages._confirm("shop", "qa")
    assert "removing stage qa of shop stops its tasks and its route" in refused.value.message
    assert refused.value.hint == "confirm with: stackyard stages remove shop qa --yes"
    monkeypatch.setattr(shared.sys, "stdin", Terminal())
    monkeypatch.setattr(shared.typer, "prompt", lambda *args, **kwargs: "qa")
    stages._confirm("shop", "qa")  # confirmed: no error
    monkeypatch.setattr(shared.typer, "prompt", lambda *args, **kwargs: "prod")
    with pytest.raises(UsageError, match="'prod' is not 'qa': nothing was removed"):
        stages._confirm("shop", "qa")
