"""`users remove`, `targets remove`, `registries remove` and `notify remove` confirm at a
terminal and, from a script, refuse without --yes before they ask the API anything."""

from __future__ import annotations

import io
import sys
from typing import Any, NamedTuple

import pytest

from stackyard.cli import notify, people, registries, shared, targets
from stackyard.cli.main import app
from stackyard.cli.output import run_cli
from stackyard.errors import UsageError


class Removal(NamedTuple):
    argv: list[str]
    path: str  # what the API is asked to DELETE
    question: str  # asked at a terminal
    consequence: str  # said without one


REMOVALS = [
    Removal(
        ["users", "remove", "carol"],
        "/api/v1/users/carol",
        "Remove carol and revoke every token of theirs?",
        "removing carol revokes every token of theirs",
    ),
    Removal(
        ["targets", "remove", "eu"],
        "/api/v1/targets/eu",
        "Remove target eu?",
        "removing target eu forgets its engine endpoint and registry",
    ),
    Removal(
        ["registries", "remove", "ghcr"],
        "/api/v1/registries/ghcr",
        "Remove registry ghcr and its stored credentials?",
        "removing registry ghcr deletes its stored credentials",
    ),
    Removal(
        ["notify", "remove", "hello", "2"],
        "/api/v1/stacks/hello/notify/2",
        "Remove channel 2 of hello? What it has still to send is dropped.",
        "removing channel 2 of hello drops what it has still to send",
    ),
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Api:
    """Stands in for the API client: records what it was asked, answers a removal."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.asked.append((method, path))
        return {"name": "x", "engine": "docker", "endpoint": "tcp://127.0.0.1:2376",
                "registry": "local", "region": "", "url": "127.0.0.1:5001", "username": "bot",
                "auth": "basic", "number": 2, "kind": "slack", "shown": "#ops",
                "revoked": [], "unprotected": []}  # fmt: skip


class Cli:
    """Runs ``stackyard ARGV`` as ``main`` does, with stdin a terminal or not, against
    ``api``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.api = Api()
        self._monkeypatch = monkeypatch
        self._capsys = capsys
        for module in (people, targets, registries, notify):
            monkeypatch.setattr(module.ApiClient, "discover", lambda settings: self.api)
        monkeypatch.delenv("STACKYARD_DEBUG", raising=False)

    def run(self, argv: list[str], *, terminal: bool = False) -> tuple[int, str]:
        """Its exit status and what it wrote to stderr (on one line)."""
        self._monkeypatch.setattr(shared.sys, "stdin", Terminal() if terminal else io.StringIO())
        self._monkeypatch.setattr(sys, "argv", ["stackyard", *argv])
        code = run_cli(app)
        return code, " ".join(self._capsys.readouterr().err.split())


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


@pytest.fixture(params=REMOVALS, ids=lambda r: " ".join(r.argv[:2]))
def removal(request: pytest.FixtureRequest) -> Removal:
    found: Removal = request.param
    return found


def test_without_a_terminal_it_refuses_and_points_to_yes(removal: Removal, cli: Cli) -> None:
    code, err = cli.run(removal.argv)
    assert code == 2, err
    assert f"{removal.consequence}, and there is no terminal to confirm at" in err, err
    assert f"confirm with: stackyard {' '.join(removal.argv)} --yes" in err, err
    assert cli.api.asked == []  # nothing removed


def test_at_a_terminal_it_asks_and_no_keeps_it(
    removal: Removal, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def say_no(text: str, **kwargs: Any) -> None:
        asked.append(text)
        raise shared.typer.Abort

    monkeypatch.setattr(shared.typer, "confirm", say_no)
    code, err = cli.run(removal.argv, terminal=True)
    assert (code, err) == (130, "aborted")
    assert asked == [removal.question]
    assert cli.api.asked == []


def test_yes_removes_without_asking(removal: Removal, cli: Cli) -> None:
    code, err = cli.run([*removal.argv, "--yes"])
    assert code == 0, err
    assert cli.api.asked == [("DELETE", removal.path)]


def test_the_refusal_is_a_usage_error_with_the_command_to_confirm_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared.sys, "stdin", io.StringIO())
    with pytest.raises(UsageError) as refused:
        shared.confirm_removal("Remove it?", "removing it loses it", "stackyard it remove")
    assert refused.value.exit_code == 2
    assert refused.value.message == "removing it loses it, and there is no terminal to confirm at"
    assert refused.value.hint == "confirm with: stackyard it remove --yes"
