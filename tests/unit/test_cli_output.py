"""What the CLI prints quotes users and apps as written: rich markup in a table cell (a
deployment's reason ends with the app's own log lines) is text, not a style."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from stackyard.cli.client import ApiClient
from stackyard.cli.deployments import deployments
from stackyard.cli.output import new_table
from stackyard.cli.runs import run_table

APP_SAID = "boom: [error] GET [/api/items] 500 [bold]"


def test_a_table_cell_prints_brackets_as_written() -> None:
    """Before, rich dropped `[error]` and `[bold]` and failed the whole command on
    `[/api/items]` ("closing tag … doesn't match any open tag")."""
    table = new_table("DEPLOYMENT", "REASON", box=None)
    table.add_row("4", APP_SAID)
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    assert APP_SAID in out.getvalue()


def _step(kind: str, stage: str, status: str, started: bool) -> dict[str, object]:
    return {
        "kind": kind,
        "stage": stage,
        "status": status,
        "number": 2 if started and kind != "gate" else None,
        "message": "auto" if kind == "gate" else "",
        "started_at": "2026-11-29T08:04:29Z" if started else None,
    }


def test_steps_after_a_failed_one_read_as_not_run_and_a_cancelled_gate_as_cancelled() -> None:
    """Before, every step after a failed deployment printed "✗ release", "✗ deploy" as if
    the next stages had failed too; a gate a person cancelled while it waited stays ✗."""
    failed = {
        "number": 2,
        "commit_sha": "ce04e6289b168166",
        "ref": "main",
        "trigger": "git push",
        "status": "FAILED",
        "steps": [
            _step("build", "", "SUCCEEDED", True),
            _step("deploy", "dev", "FAILED", True),
            _step("release", "staging", "CANCELLED", False),
            _step("deploy", "staging", "CANCELLED", False),
        ],
    }
    cancelled = {
        **failed,
        "number": 3,
        "status": "CANCELLED",
        "steps": [_step("build", "", "SUCCEEDED", True), _step("gate", "dev", "CANCELLED", True)],
    }
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(run_table([failed, cancelled]))
    lines = out.getvalue().splitlines()
    assert "✗ deploy #2" in lines[1]
    assert "- release - deploy" in lines[1]
    assert "✗ gate (auto)" in lines[2]


def test_the_newest_deployments_long_reason_is_printed_whole_below_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The REASON cell is cut at 120 characters; a failure's reason ends with the app's
    own last log lines, which were lost ("last health check: GET ht")."""
    reason = (
        "3 new task(s) failed (circuit breaker at 3); task sy-hello-dev-r2-19798a exited with "
        "status 3; last health check: GET http://127.0.0.1:20099/healthz: refused; "
        "last log lines: boom [error] at /app/main.py:12"
    )
    record = {"number": 2, "release_number": 2, "status": "FAILED", "trigger": "run 2",
              "digest": "sha256:" + "8" * 64, "reason": reason}  # fmt: skip
    answer = {"deployments": [record], "events": []}

    class Client:
        def get(self, path: str, **_: object) -> object:
            assert path.endswith("/stages/dev/deployments")
            return answer

    monkeypatch.setattr(ApiClient, "discover", classmethod(lambda cls, settings: Client()))
    monkeypatch.setenv("COLUMNS", "200")
    deployments("hello", "dev", None, False)
    out = capsys.readouterr().out
    assert "…" in out.splitlines()[1]
    assert f"Deployment 2 FAILED: {reason}" in out.replace("\n", "")
