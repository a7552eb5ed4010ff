"""``stackyard secrets set`` never takes a value from an argument; ``env set`` needs KEY=VALUE.

Both are refused before the CLI looks for a platform, so no platform runs here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stackyard.cli.main import app
from stackyard.cli.output import run_cli


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["stackyard", *args])
    code = run_cli(app)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_secret_value_as_an_argument_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        monkeypatch,
        capsys,
        "secrets",
        "set",
        "shop",
        "DB_PASSWORD=hunter2",
        "--stage",
        "prod",
        "--data-dir",
        str(tmp_path),
    )
    assert code == 2
    assert "never taken from an argument" in err
    assert 'printf %s "$VALUE" | stackyard secrets set shop DB_PASSWORD --stage prod' in err
    assert "hunter2" not in out + err


def test_env_set_needs_key_equals_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        monkeypatch, capsys, "env", "set", "shop", "GREETING", "--data-dir", str(tmp_path)
    )
    assert code == 2
    assert "'GREETING' is not KEY=VALUE" in err
