"""``stackyard config check`` and ``schema``: output, warnings and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stackyard.cli.main import app
from stackyard.cli.output import run_cli

STACKYARD = Path(sys.executable).parent / "stackyard"

VALID = """\
name: shop
stages:
  - name: dev
    replics: 2
  - name: prod
    promotion: approval
    port: 8081
"""


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the CLI in-process through the same runner as the console script."""
    monkeypatch.setattr(sys, "argv", ["stackyard", *args])
    code = run_cli(app)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "stackyard.yml").write_text(VALID, encoding="utf-8")
    return tmp_path


def test_check_valid_prints_summary_and_warnings(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "config", "check", str(repo))
    assert code == 0
    assert "valid:" in out
    for word in ("dev", "prod", "approval", "0.5", "256m", "127.0.0.1:8081", "auto port"):
        assert word in out
    assert "warning:" in err
    assert "stackyard.yml:4:5: stages[0].replics" in err
    assert "did you mean 'replicas'?" in err


def test_check_accepts_a_file_path(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "stackyard.prod.yml").write_text("cpu: 2\nmemory: 1g\n", encoding="utf-8")
    code, out, _ = run(monkeypatch, capsys, "config", "check", str(repo / "stackyard.yml"))
    assert code == 0
    assert "stackyard.prod.yml" in out
    assert "1g" in out


def test_check_json(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "config", "check", "--json", str(repo))
    assert code == 0
    result = json.loads(out)
    assert result["valid"] is True
    assert result["config"]["name"] == "shop"
    assert [s["name"] for s in result["config"]["stages"]] == ["dev", "prod"]
    assert result["config"]["stages"][1]["port"] == 8081
    (warning,) = result["warnings"]
    assert warning["line"] == 4
    assert warning["key"] == "stages[0].replics"
    assert "did you mean 'replicas'?" in warning["message"]


def test_check_without_stackyard_yml_uses_default_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "config", "check", str(tmp_path))
    assert code == 0
    assert "using the default stages" in out
    assert "staging" in out
    assert err == ""


def test_check_invalid_exits_2_with_error_and_hint(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "stackyard.yml").write_text("stages:\n  - name: dev\n    cpu: many\n")
    code, out, err = run(monkeypatch, capsys, "config", "check", str(repo))
    assert code == 2
    assert out == ""
    assert "error:" in err
    assert "stackyard.yml:3:5: stages[0].cpu" in err
    assert "hint:" in err


def test_check_override_for_unknown_stage_exits_2(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "stackyard.qa.yml").write_text("cpu: 2\n", encoding="utf-8")
    code, _, err = run(monkeypatch, capsys, "config", "check", str(repo))
    assert code == 2
    assert "stackyard.qa.yml" in err
    assert "valid stages: dev, prod" in err


def test_check_missing_path_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(monkeypatch, capsys, "config", "check", str(tmp_path / "nope.yml"))
    assert code == 2
    assert "no such file or directory" in err


def test_schema_prints_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "config", "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "stackyard.yml"
    assert "StageConfig" in schema["$defs"]


def test_console_script_exit_statuses(tmp_path: Path) -> None:
    (tmp_path / "stackyard.yml").write_text("stages: [{name: dev}, {name: dev}]\n")
    bad = subprocess.run(
        [str(STACKYARD), "config", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    assert "stage name 'dev' is used twice" in bad.stderr
    (tmp_path / "stackyard.yml").write_text("stages: [{name: dev}]\n")
    good = subprocess.run(
        [str(STACKYARD), "config", "check", "--json", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["valid"] is True


TARGETED = """\
stages:
  - name: dev
  - name: prod-eu
    target: eu
  - name: prod-us
    target: us
"""


def test_check_names_the_stage_and_line_of_a_target_that_is_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "stackyard.yml").write_text(TARGETED, encoding="utf-8")
    code, out, err = run(monkeypatch, capsys, "config", "check", str(tmp_path), "--targets", "eu")
    assert code == 2, out
    assert "stackyard.yml:6:5: stages[2].target: stage 'prod-us' runs on target 'us', " in err
    assert "(targets: eu, local)" in err
    assert "prod-eu" not in err
    code, out, _ = run(monkeypatch, capsys, "config", "check", str(tmp_path), "--targets", "eu,us")
    assert code == 0
    assert "prod-us" in out
    assert "not checked against" not in err
    # without --targets or --platform, the names are not checked (a build checks them),
    # and the check says so rather than looking like it vouched for them
    code, _, err = run(monkeypatch, capsys, "config", "check", str(tmp_path))
    assert code == 0
    assert (
        "note: target(s) eu, us not checked against the platform's targets (offline); add "
        "--platform, or --targets a,b"
    ) in err


def test_check_refuses_a_target_that_is_no_name_and_the_two_ways_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "stackyard.yml").write_text(
        "stages:\n  - name: dev\n    target: EU West\n", encoding="utf-8"
    )
    code, _, err = run(monkeypatch, capsys, "config", "check", str(tmp_path))
    assert code == 2
    assert "stackyard.yml:3:5: stages[0].target: " in err
    assert "'EU West' is not a valid target name" in err
    code, _, err = run(
        monkeypatch, capsys, "config", "check", str(tmp_path), "--targets", "eu", "--platform"
    )
    assert code == 2
    assert "give --targets or --platform, not both" in err
