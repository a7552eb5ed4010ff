"""`stackyard doctor` against a real platform: all well, then one thing broken at a time
(a registry that stops answering, a task of a deleted stack, a data directory others can
enter), each reported with its fix, and well again once the fix is applied."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

import pytest

from .conftest import RunningPlatform

pytestmark = pytest.mark.integration


def doctor(platform: RunningPlatform) -> tuple[int, dict[str, dict[str, Any]], dict[str, Any]]:
    result = platform.cli("doctor", "--json", check=False, timeout=120)
    report = json.loads(result.stdout)
    return result.returncode, {c["check"]: c for c in report["checks"]}, report


def test_doctor_names_each_broken_part_and_its_fix(platform: RunningPlatform) -> None:
    code, checks, report = doctor(platform)
    for name in ("control plane", "engine", "registry", "router", "permissions", "database"):
        assert checks[name]["verdict"] == "ok", checks[name]
    assert code == 0
    assert report["ok"] is True
    assert set(report["disk_use"]) >= {"registry", "logs", "database"}

    registry = platform.children["registry"]
    os.kill(registry, signal.SIGSTOP)  # it still runs, and answers nothing
    try:
        code, checks, report = doctor(platform)
    finally:
        os.kill(registry, signal.SIGCONT)
    assert code == 1
    assert report["ok"] is False
    assert checks["registry"]["verdict"] == "fail"
    assert "does not answer" in checks["registry"]["summary"]
    assert "registry.log" in checks["registry"]["fix"]
    assert checks["router"]["verdict"] == "ok"

    platform_id = (platform.data_dir / "platform-id").read_text().strip()
    orphan = subprocess.run(
        [
            "docker",
            "create",
            "--label",
            f"dev.stackyard.platform={platform_id}",
            "--label",
            "dev.stackyard.stack=ghost",
            "busybox:latest",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    try:
        code, checks, _ = doctor(platform)
        assert checks["orphan tasks"]["verdict"] == "warn"
        assert "ghost" in checks["orphan tasks"]["summary"]
        fix = checks["orphan tasks"]["fix"]
        assert fix == f"docker rm -f {orphan[:12]}"
        subprocess.run(fix.split(), capture_output=True, timeout=60, check=True)
    finally:
        subprocess.run(["docker", "rm", "-f", orphan], capture_output=True, check=False)

    platform.data_dir.chmod(0o755)
    try:
        code, checks, _ = doctor(platform)
        assert code == 1
        assert checks["permissions"]["fix"] == f"chmod 700 {platform.data_dir}"
    finally:
        platform.data_dir.chmod(0o700)

    code, checks, _ = doctor(platform)
    assert code == 0
    assert checks["orphan tasks"]["verdict"] == "ok"
    assert checks["registry"]["verdict"] == "ok"
