"""Every command speaks the same way: --json everywhere, one error line, no tracebacks."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from stackyard.cli.main import app
from stackyard.cli.output import run_cli


def _leaves(command: Any, prefix: str = "") -> list[tuple[str, Any]]:
    children = getattr(command, "commands", None)
    if not children:
        return [(prefix.strip(), command)]
    found = []
    for name, child in children.items():
        found.extend(_leaves(child, f"{prefix} {name}"))
    return found


def test_every_command_takes_json() -> None:
    commands = _leaves(typer.main.get_command(app))
    assert len(commands) > 30
    missing = [
        name
        for name, command in commands
        if not any("--json" in getattr(p, "opts", []) for p in command.params)
    ]
    assert missing == []


def test_every_commands_help_prints() -> None:
    """Help text goes through Rich markup: a literal `[/namespace]` in an option's help
    crashed `registries add --help` with an internal error."""
    runner = CliRunner()
    broken = []
    for name, _ in _leaves(typer.main.get_command(app)):
        result = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "120"})
        if result.exit_code != 0 or "Usage" not in result.output:
            broken.append((name, result.exit_code, repr(result.exception)))
    assert broken == []


def _broken_app() -> typer.Typer:
    broken = typer.Typer()

    @broken.command()
    def explode(debug: bool = typer.Option(False, "--debug")) -> None:
        raise KeyError("surprise")

    @broken.command()
    def other() -> None:
        """A second command, so Typer keeps command names."""

    return broken


def test_an_unexpected_error_is_one_line_with_a_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["stackyard", "explode"])
    monkeypatch.delenv("STACKYARD_DEBUG", raising=False)
    assert run_cli(_broken_app()) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError: 'surprise'" in err
    assert "--debug" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["stackyard", "explode", "--debug"])
    with pytest.raises(KeyError, match="surprise"):
        run_cli(_broken_app())


@pytest.mark.parametrize(
    ("argv", "usage", "error"),
    [
        (["regions"], "Usage: stackyard [OPTIONS] COMMAND", "No such command 'regions'."),
        (["stacks", "crate"], "Usage: stackyard stacks", "'crate'. Did you mean 'create'?"),
        (["up", "--engines", "x"], "Usage: stackyard up [OPTIONS]", "No such option: --engines"),
    ],
)
def test_a_mistyped_command_or_option_is_a_usage_error(
    argv: list[str],
    usage: str,
    error: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.argv", ["stackyard", *argv])
    # Click names the program after `python -m <package>` when __main__ has a package:
    # under `python -m pytest` that would be "python -m pytest.stackyard".
    monkeypatch.setattr(sys.modules["__main__"], "__package__", None, raising=False)
    monkeypatch.delenv("STACKYARD_DEBUG", raising=False)
    assert run_cli(app) == 2
    err = capsys.readouterr().err
    assert usage in err
    assert "Error: No such" in err
    assert error in err
    assert "--help' for help" in err
    assert "internal error" not in err
    assert "please report it" not in err
