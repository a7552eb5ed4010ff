"""scripts/demo, the README's first command, run twice from a clean data directory.

The demo sets up the host, installs, starts a platform and takes examples/hello through
a whole pipeline run; the second run must reuse what the first left and run again. Both
steps of the host set-up are idempotent and take about a second when already done, so
the script runs as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import STACKYARD, free_port, remove_tasks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo"
STAGES = ("dev", "staging", "prod")
APPROVAL_LINE = "approving prod automatically for the demo: stackyard approve hello --stage prod"


@dataclass
class Demo:
    data_dir: Path
    api_port: int
    env: dict[str, str]

    def run(self) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(DEMO)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (
            f"scripts/demo exited {result.returncode}\n"
            f"stdout (tail):\n{result.stdout[-6000:]}\nstderr (tail):\n{result.stderr[-3000:]}"
        )
        return result

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*STACKYARD, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def served(self, stage: str) -> str:
        url = json.loads(self.cli("url", "hello", "--stage", stage, "--json"))["url"]
        assert url.startswith("http://127.0.0.1:"), url
        return httpx.get(url, timeout=5).text

    def runs(self) -> list[dict[str, object]]:
        found: list[dict[str, object]] = json.loads(self.cli("runs", "hello", "--json"))
        return found


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    if os.geteuid() != 0:
        pytest.fail("scripts/demo sets up the host and needs root: run the tests as root")
    data_dir = tmp_path / "data"
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKYARD_")}
    env.update(
        STACKYARD_DATA_DIR=str(data_dir),
        STACKYARD_DEMO_API_PORT=str(api_port),
        STACKYARD_DEMO_REGISTRY_PORT=str(free_port()),
        COLUMNS="200",
    )
    running = Demo(data_dir, api_port, env)
    try:
        yield running
    finally:
        subprocess.run(
            [sys.executable, "-m", "stackyard", "down", "--all"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        remove_tasks(data_dir)


def test_demo_runs_the_example_through_every_stage_and_runs_again(demo: Demo) -> None:
    first = demo.run()

    for stage in STAGES:
        page = demo.served(stage)
        assert "hello from Stackyard" in page, (stage, page)
        assert "VERSION=v1" in page, (stage, page)
    assert APPROVAL_LINE in first.stdout
    assert f"http://127.0.0.1:{demo.api_port}/ui/" in first.stdout
    assert f"cat {demo.data_dir / 'admin-token'}" in first.stdout
    assert "stackyard down" in first.stdout
    assert "(match)" in first.stdout
    assert "no_match" not in first.stdout
    assert (demo.data_dir / "demo" / "hello" / ".git").is_dir()

    second = demo.run()

    assert "pipeline run 2 started" in second.stdout, second.stdout[-3000:]
    assert APPROVAL_LINE in second.stdout
    for stage in STAGES:
        page = demo.served(stage)
        assert "VERSION=v2" in page, (stage, page)
    runs = {run["number"]: run["status"] for run in demo.runs()}
    assert runs == {1: "SUCCEEDED", 2: "SUCCEEDED"}

    # The app's repository removed (as the demo advises when it was changed and fails):
    # the next demo copies the example again and builds on the platform's history, which
    # it fetches with the admin token (the remote's own token may push, not fetch). It
    # pushed a history of its own before, and was refused.
    shutil.rmtree(demo.data_dir / "demo" / "hello")
    third = demo.run()
    assert "the platform's remote already had commits" in third.stdout
    assert "pipeline run 3 started" in third.stdout, third.stdout[-3000:]
    for stage in STAGES:
        assert "VERSION=v1" in demo.served(stage), stage
    assert {run["number"]: run["status"] for run in demo.runs()}[3] == "SUCCEEDED"
