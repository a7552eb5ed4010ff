"""``stackyard buildspec run``: exit statuses 0/1/2, --json shape, warnings and options.

Every test runs twice: in a build container (the default) and ``--on-host``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stackyard.cli.buildspec import app
from stackyard.cli.output import run_cli

OK = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo built $WHO\n"
FAILING = "version: 0.2\nphases:\n  build:\n    commands:\n      - exit 4\n"


Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture(params=["--on-host", pytest.param("container", marks=pytest.mark.integration)])
def invoke(request: pytest.FixtureRequest) -> Invoke:
    """Run the command line ``args`` (in a build container, or with --on-host)."""
    where = [] if request.param == "container" else [str(request.param)]

    def run(
        args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> tuple[int, str, str]:
        extra = where if args[:1] == ["run"] else []
        monkeypatch.setattr(sys, "argv", ["stackyard-buildspec", *args, *extra])
        code = run_cli(app)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def buildspec_file(tmp_path: Path) -> Path:
    path = tmp_path / "build.yml"
    path.write_text(OK)
    return path


def test_success_exits_zero_and_prints_output(
    invoke: Invoke,
    buildspec_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = buildspec_file.parent / "run.log"
    args = ["run", str(buildspec_file), "--env", "WHO=me", "--log-file", str(log)]
    code, out, _ = invoke(args, monkeypatch, capsys)
    assert code == 0
    assert "== build ==" in out
    assert "built me" in out
    assert f"log: {log}" in out
    assert "built me" in log.read_text()


def test_failure_exits_one(
    invoke: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "build.yml"
    path.write_text(FAILING)
    args = ["run", str(path), "--log-file", str(tmp_path / "l")]
    code, out, err = invoke(args, monkeypatch, capsys)
    assert code == 1
    assert "FAILED" in out
    assert "error: the build FAILED in build (exit status 4)" in err


def test_json_shape_on_stdout_and_output_on_stderr(
    invoke: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "build.yml"
    path.write_text(
        "version: 0.2\nenv:\n  exported-variables: [V]\nphases:\n"
        "  build:\n    commands: ['V=1; echo hi']\n  post_build:\n    commands: [exit 2]\n"
    )
    args = ["run", str(path), "--json", "--log-file", str(tmp_path / "l")]
    code, out, err = invoke(args, monkeypatch, capsys)
    assert code == 1
    assert json.loads(out) == {
        "status": "FAILED",
        "phases": [
            {"name": "build", "status": "SUCCEEDED", "exit_code": 0},
            {"name": "post_build", "status": "FAILED", "exit_code": 2},
        ],
        "exported": {"V": "1"},
    }
    assert "hi" in err


def test_invalid_spec_exits_two_with_line(
    invoke: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "build.yml"
    path.write_text("version: 0.2\nphases:\n  biuld: {}\n")
    code, _, err = invoke(["run", str(path)], monkeypatch, capsys)
    assert code == 2
    assert "build.yml:3:3: phases.biuld: unknown phase" in err


def test_warnings_go_to_stderr_with_file_and_line(
    invoke: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "build.yml"
    path.write_text(OK + "cache:\n  paths: [x]\n")
    args = ["run", str(path), "--json", "--log-file", str(tmp_path / "l")]
    code, out, err = invoke(args, monkeypatch, capsys)
    assert code == 0
    assert f"warning: {path}:6:1: cache: 'cache' is not supported and is ignored" in err
    assert json.loads(out)["status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("option", "value"), [("--env", "NOEQUALS"), ("--env", "1BAD=x"), ("--secret", "=v")]
)
def test_bad_pair_syntax_exits_two(
    invoke: Invoke,
    buildspec_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
) -> None:
    code, _, err = invoke(["run", str(buildspec_file), option, value], monkeypatch, capsys)
    assert code == 2
    assert f"error: {option}" in err


def test_missing_workdir_exits_two(
    invoke: Invoke,
    buildspec_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = buildspec_file.parent / "nowhere"
    code, _, err = invoke(
        ["run", str(buildspec_file), "--workdir", str(missing)], monkeypatch, capsys
    )
    assert code == 2
    assert "nowhere does not exist" in err


def test_secret_option_feeds_and_masks(
    invoke: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "build.yml"
    path.write_text(
        "version: 0.2\nenv:\n  secrets-manager: {PW: db}\nphases:\n"
        "  build:\n    commands: ['echo pw=$PW']\n"
    )
    args = ["run", str(path), "--secret", "db=hunter2", "--log-file", str(tmp_path / "l")]
    code, out, _ = invoke(args, monkeypatch, capsys)
    assert code == 0
    assert "pw=***" in out
    assert "hunter2" not in out


def test_default_log_file_under_dot_stackyard(
    invoke: Invoke,
    buildspec_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(buildspec_file.parent)
    code, out, _ = invoke(["run", str(buildspec_file)], monkeypatch, capsys)
    assert code == 0
    [log] = list((buildspec_file.parent / ".stackyard" / "logs").glob("buildspec-*.log"))
    assert f"log: {log.relative_to(buildspec_file.parent)}" in out


def test_console_script_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "build.yml"
    path.write_text("phases: {}\n")
    stackyard = Path(sys.executable).parent / "stackyard"
    done = subprocess.run(
        [str(stackyard), "buildspec", "run", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "required key 'version' is missing" in done.stderr


def test_a_secret_the_spec_never_maps_is_named_with_how_to_map_it(
    invoke: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "build.yml"
    path.write_text(
        "version: 0.2\nenv:\n  secrets-manager: {PW: db}\nphases:\n"
        "  build:\n    commands: ['echo token=${TOKEN:-unset} pw=$PW']\n"
    )
    args = ["run", str(path), "--secret", "TOKEN=s3cret", "--secret", "db=hunter2"]
    code, out, err = invoke([*args, "--log-file", str(tmp_path / "l")], monkeypatch, capsys)
    assert code == 0
    assert "token=unset pw=***" in out  # as in CodeBuild: only a mapped secret is seen
    assert (
        "warning: --secret TOKEN: build.yml maps no variable to secret 'TOKEN', so no "
        "command sees it; map one under env.secrets-manager, e.g. "
        "`env: {secrets-manager: {TOKEN: TOKEN}}`"
    ) in err
    assert "secret 'db'" not in err  # mapped through PW: no warning
    assert "s3cret" not in out + err
