"""`stackyard up` starts the real API, registry and Caddy; `down` and Ctrl-C leave nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from stackyard.platform.state import pid_alive

from .conftest import STACKYARD, RunningPlatform, cli_env, free_port, start_platform

pytestmark = pytest.mark.integration


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_up_starts_three_real_components(platform: RunningPlatform) -> None:
    assert httpx.get(f"{platform.api_url}/healthz").json() == {"status": "ok"}
    # The registry demands credentials; with the stored ones, it answers the v2 API.
    assert httpx.get(f"http://{platform.registry}/v2/").status_code == 401
    creds = json.loads((platform.data_dir / "registry-credentials.json").read_text())
    authed = httpx.get(
        f"http://{platform.registry}/v2/", auth=(creds["username"], creds["password"])
    )
    assert authed.status_code == 200
    config = httpx.get(f"{platform.router_admin}/config/").json()
    assert config["admin"]["listen"] == platform.router_admin.removeprefix("http://")
    for name in ("registry", "caddy"):
        assert pid_alive(platform.children[name]), name


def test_api_needs_the_token_and_cli_finds_it(platform: RunningPlatform) -> None:
    assert httpx.get(f"{platform.api_url}/api/v1/status").status_code == 401
    token_file = platform.data_dir / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    result = platform.cli("status", "--json")
    assert json.loads(result.stdout)["registry"] == platform.registry


def test_down_leaves_no_process_behind(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "data")
    pids = [running.pid, *running.children.values()]
    assert all(pid_alive(pid) for pid in pids)
    result = running.cli("down")
    assert "stopped" in result.stdout
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert _processes_mentioning(str(running.data_dir)) == []
    assert not (running.data_dir / "platform.json").exists()
    # A second `down` is harmless and says so.
    assert "No Stackyard is running" in running.cli("down").stdout


def test_ctrl_c_in_foreground_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = cli_env(data_dir)
    ports = ["--registry-port", str(free_port()), "--caddy-admin-port", str(free_port())]
    argv = [*STACKYARD, "up", "--api-port", str(free_port()), *ports]
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        state_file = data_dir / "platform.json"
        deadline = time.monotonic() + 30
        while not state_file.exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            time.sleep(0.05)
        children = json.loads(state_file.read_text())["children"]
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Stackyard stopped." in output
    assert [pid for pid in children.values() if pid_alive(pid)] == []
    assert _processes_mentioning(str(data_dir)) == []


def test_second_up_reports_the_running_platform(platform: RunningPlatform) -> None:
    result = platform.cli("up", "-d", "--json")
    assert json.loads(result.stdout)["status"] == "already running"
    assert json.loads(result.stdout)["pid"] == platform.pid


def test_port_in_use_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env(tmp_path / "data")
        result = subprocess.run(
            [*STACKYARD, "up", "--registry-port", str(port), "--api-port", str(free_port()),
             "--caddy-admin-port", str(free_port())],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"registry: port 127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
