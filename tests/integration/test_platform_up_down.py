"""`stackyard up` starts the real API over a data plane (registry, two Caddies, the upstream
responder); `down` and Ctrl-C stop the control plane only, `down --all` leaves nothing."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from stackyard.platform.state import pid_alive
from stackyard.router.caddy import UnixSocketTransport

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


def test_up_starts_the_real_components(platform: RunningPlatform) -> None:
    assert httpx.get(f"{platform.api_url}/healthz").json() == {"status": "ok"}
    # The registry demands credentials; with the stored ones, it answers the v2 API.
    assert httpx.get(f"http://{platform.registry}/v2/").status_code == 401
    creds = json.loads((platform.data_dir / "registry-credentials.json").read_text())
    authed = httpx.get(
        f"http://{platform.registry}/v2/", auth=(creds["username"], creds["password"])
    )
    assert authed.status_code == 200
    run = platform.data_dir / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    for n in (1, 2):  # each Caddy's admin API: a unix socket only its owner may use
        socket_path = run / f"caddy-{n}.sock"
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        transport = UnixSocketTransport(socket_path)
        with httpx.Client(transport=transport, base_url="http://caddy-admin") as admin:
            config = admin.get("/config/").json()
        assert config["admin"]["listen"] == f"unix/{socket_path}"
    assert stat.S_IMODE((run / "dataplane.sock").stat().st_mode) == 0o600
    record = platform.dataplane
    assert set(record["components"]) == {"registry", "caddy-1", "caddy-2"}
    for pid in (record["pid"], *record["components"].values()):
        assert pid_alive(pid)


def test_api_needs_the_token_and_cli_finds_it(platform: RunningPlatform) -> None:
    assert httpx.get(f"{platform.api_url}/api/v1/status").status_code == 401
    token_file = platform.data_dir / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    result = platform.cli("status", "--json")
    assert json.loads(result.stdout)["registry"] == platform.registry


def test_down_keeps_the_data_plane_and_down_all_leaves_no_process(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "data")
    record = running.dataplane
    dataplane = [record["pid"], *record["components"].values()]
    assert all(pid_alive(pid) for pid in [running.pid, *dataplane])
    result = running.cli("down")
    assert "stopped" in result.stdout
    assert "The data plane keeps serving" in result.stdout
    assert not pid_alive(running.pid)
    assert all(pid_alive(pid) for pid in dataplane)
    assert not (running.data_dir / "platform.json").exists()
    result = running.cli("down", "--all")
    assert "Data plane" in result.stdout, result.stdout
    assert [pid for pid in dataplane if pid_alive(pid)] == []
    assert _processes_mentioning(str(running.data_dir)) == []
    assert not (running.data_dir / "run" / "dataplane.json").exists()
    # A second `down` is harmless and says so.
    assert "No Stackyard control plane is running" in running.cli("down", "--all").stdout


def test_ctrl_c_in_foreground_stops_the_control_plane(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = cli_env(data_dir)
    argv = [*STACKYARD, "up", "--api-port", str(free_port()), "--registry-port", str(free_port())]
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
        # The data plane outlives the control plane: stopped here, by the pids it records.
        stopped = subprocess.run([*STACKYARD, "down", "--all"], env=env, capture_output=True,
                                 text=True, timeout=90)  # fmt: skip
    assert process.returncode == 0, output
    assert "Stackyard stopped. The apps keep serving" in output
    assert set(children) == {"dataplane", "registry", "caddy-1", "caddy-2"}
    assert "Data plane" in stopped.stdout, stopped.stdout + stopped.stderr
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
            [*STACKYARD, "up", "--registry-port", str(port), "--api-port", str(free_port())],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"registry: port 127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
