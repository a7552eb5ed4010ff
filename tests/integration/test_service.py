"""`stackyard service install`: a unit that systemd accepts, and whose command, killed as a
crash would kill it, is started again by systemd and takes up a platform that kept serving.

systemd does not run on these machines: the unit is checked with `systemd-analyze verify`,
and the restart is done here the way ``Restart=on-failure`` does it, with the unit's own
ExecStart and Environment, in a clean environment.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from stackyard.platform.state import pid_alive

from .conftest import STACKYARD, RunningPlatform, cli_env, free_port, remove_tasks
from .test_dataplane import tasks_of
from .test_deployments import new_stack as new_dev_stack
from .test_deployments import ship, stage_url, version_served

pytestmark = pytest.mark.integration

# What Restart=on-failure does not restart: a clean exit, or death by one of these signals.
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}


def unit_lines(unit: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines()
            if line.startswith(f"{key}=")]  # fmt: skip


def restarted_by_systemd(returncode: int) -> bool:
    """Whether ``Restart=on-failure`` starts the unit again after this exit."""
    if returncode < 0:
        return signal.Signals(-returncode) not in CLEAN_SIGNALS
    return returncode != 0


def start_as_systemd_would(unit: Path, log: Path) -> subprocess.Popen[bytes]:
    """The unit's ExecStart, with only its Environment= lines and a PATH."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    env.update(dict(line.split("=", 1) for line in unit_lines(unit, "Environment")))
    with log.open("ab") as output:
        return subprocess.Popen(
            shlex.split(unit_lines(unit, "ExecStart")[0]), env=env, stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_serving(data_dir: Path, pid: int, timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    state_file = data_dir / "platform.json"
    while time.monotonic() < deadline:
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["pid"] == pid:
                try:
                    if httpx.get(f"{state['api_url']}/healthz", timeout=2).status_code == 200:
                        return dict(state)
                except httpx.TransportError:
                    pass
        assert pid_alive(pid), "the unit's command exited while starting"
        time.sleep(0.1)
    raise AssertionError(f"the unit's command (pid {pid}) was not ready in {timeout} s")


def test_the_unit_verifies_and_its_command_comes_back_from_a_kill(tmp_path: Path) -> None:
    data_dir, units = tmp_path / "data", tmp_path / "units"
    env = cli_env(data_dir)
    api_port, registry_port = free_port(), free_port()
    installed = subprocess.run(
        [*STACKYARD, "service", "install", "--unit-dir", str(units), "--system", "--api-port",
         str(api_port), "--registry-port", str(registry_port), "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    unit = units / "stackyard.service"
    assert json.loads(installed.stdout)["unit"] == str(unit)
    assert (units / "multi-user.target.wants" / "stackyard.service").resolve() == unit
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed: run scripts/setup-host first")
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == "", verified.stderr  # not even a warning
    status = json.loads(subprocess.run(
        [*STACKYARD, "service", "status", "--unit-dir", str(units), "--system", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True).stdout)  # fmt: skip
    assert (status["installed"], status["enabled"]) == (True, True)
    assert status["control_plane"] is None

    log = tmp_path / "unit.log"
    first = start_as_systemd_would(unit, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        state = wait_serving(data_dir, first.pid)
        yard = RunningPlatform(data_dir, str(state["api_url"]), str(state["registry"]),
                               str(state["router_admin"]), first.pid, {}, env)  # fmt: skip
        new_dev_stack(yard, tmp_path, "unit")
        ship(yard, "unit")
        url = stage_url(yard, "unit")
        tasks = tasks_of(yard, "unit")
        first.send_signal(signal.SIGKILL)  # a crash, an OOM kill
        assert restarted_by_systemd(first.wait(timeout=30))
        assert version_served(url) == "v1"  # the data plane serves alone meanwhile
        second = start_as_systemd_would(unit, log)
        yard.pid = second.pid
        wait_serving(data_dir, second.pid)
        assert tasks_of(yard, "unit") == tasks  # adopted, not restarted
        assert version_served(url) == "v1"
        second.send_signal(signal.SIGTERM)  # `systemctl stop`: a clean exit, no restart
        assert not restarted_by_systemd(second.wait(timeout=60))
        assert version_served(url) == "v1"  # KillMode=process: the apps keep serving
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        subprocess.run([*STACKYARD, "down", "--all"], env=env, capture_output=True, timeout=90)
        remove_tasks(data_dir)
    removed = subprocess.run(
        [*STACKYARD, "service", "uninstall", "--unit-dir", str(units), "--system"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not (units / "multi-user.target.wants" / "stackyard.service").is_symlink()
