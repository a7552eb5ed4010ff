"""`stackyard service` decides as plain data: the unit, its link, the systemctl commands."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stackyard.cli.shared import platform_settings, settings_of_command_line
from stackyard.errors import UsageError
from stackyard.platform.lifecycle import foreground_argv
from stackyard.platform.service import (
    ServicePlan,
    plan_install,
    plan_uninstall,
    unit_text,
)
from stackyard.platform.state import PlatformState
from stackyard.platform.upgrade import RunningControlPlane, settings_of, systemd_unit
from stackyard.settings import Settings


def test_the_unit_runs_the_control_plane_in_the_foreground_and_restarts_it(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", api_port=7001, registry_port=7002)
    text = unit_text(settings, scope="system")
    lines = text.splitlines()
    assert f"ExecStart={shlex.join(foreground_argv(settings))}" in lines
    assert "--api-port 7001 --registry-port 7002" in text
    assert "Restart=on-failure" in lines
    assert "KillMode=process" in lines  # a stop or restart leaves the data plane serving
    assert "WantedBy=multi-user.target" in lines
    assert "WantedBy=default.target" in unit_text(settings, scope="user").splitlines()


def test_install_without_a_running_systemd_writes_and_enables_for_the_next_boot(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    units = tmp_path / "units"
    plan = plan_install(settings, scope="system", unit_dir=units, running=False)
    assert plan == ServicePlan(
        unit=units / "stackyard.service",
        write={units / "stackyard.service": unit_text(settings, scope="system")},
        link={
            units / "multi-user.target.wants" / "stackyard.service": Path("../stackyard.service")
        },
        notes=plan.notes,
    )
    assert any("next boot" in note for note in plan.notes)


def test_install_with_systemd_running_loads_and_starts_the_unit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    plan = plan_install(settings, scope="user", unit_dir=tmp_path, name="yard", running=True)
    assert plan.then == (
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "start", "yard.service"),
    )
    assert list(plan.link) == [tmp_path / "default.target.wants" / "yard.service"]
    assert any("enable-linger" in note for note in plan.notes)


def test_uninstall_stops_before_it_removes(tmp_path: Path) -> None:
    plan = plan_uninstall(scope="system", unit_dir=tmp_path, running=True)
    assert plan.first == (("systemctl", "stop", "stackyard.service"),)
    assert plan.remove == (
        tmp_path / "multi-user.target.wants" / "stackyard.service",
        tmp_path / "stackyard.service",
    )
    assert plan.then == (("systemctl", "daemon-reload"),)
    assert plan_uninstall(scope="system", unit_dir=tmp_path, running=False).first == ()


def test_the_unit_a_control_plane_runs_in_is_read_from_its_cgroup() -> None:
    assert systemd_unit("0::/system.slice/stackyard.service\n") == (
        "restart",
        "stackyard.service",
    )
    user = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/yard.service\n"
    assert systemd_unit(user) == ("--user", "restart", "yard.service")
    assert systemd_unit("0::/user.slice/user-0.slice/session-3.scope\n") is None
    assert systemd_unit("0::/user.slice/user-1000.slice/user@1000.service/init.scope") is None


def test_the_domain_options_reach_the_unit_and_an_upgrade_keeps_them(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        base_domain="apps.example.com",
        acme_email="ops@example.com",
        acme_ca="https://127.0.0.1:14000/dir",
        acme_roots=("/etc/pebble/root.pem", "/etc/pebble/other.pem"),
        public_address="0.0.0.0",
        http_port=5002,
        https_port=5001,
        public_api="stackyard.apps.example.com",
    )
    argv = foreground_argv(settings)
    assert "--domain apps.example.com --acme-email ops@example.com" in shlex.join(argv)
    assert "--https-port 5001" in unit_text(settings, scope="system")
    assert "--public-api stackyard.apps.example.com" in shlex.join(argv)
    state = PlatformState(1, "http://127.0.0.1:7001", "127.0.0.1:7002", "unix:/a", "/t")
    kept = settings_of(
        Settings(data_dir=tmp_path / "data"),
        RunningControlPlane(state, tuple(argv), {}, None),
        settings_of_command_line,
    )
    assert kept == replace(settings, api_port=7001, registry_port=7002)


def test_an_upgrade_from_a_command_line_without_domain_options_keeps_the_defaults(
    tmp_path: Path,
) -> None:
    base = Settings(data_dir=tmp_path / "data")
    argv = ["python", "-m", "stackyard", "up", "--network-mode", "host"]
    state = PlatformState(1, "http://127.0.0.1:7001", "127.0.0.1:7002", "unix:/a", "/t")
    kept = settings_of(
        base, RunningControlPlane(state, tuple(argv), {}, None), settings_of_command_line
    )
    assert (kept.base_domain, kept.acme_email, kept.https_port) == (None, "", 443)


def test_the_platform_s_options_take_auto_and_the_build_limits(tmp_path: Path) -> None:
    settings = platform_settings(
        tmp_path, None, None, "auto", None,
        build_image="mine:1", build_cpus=1.5, build_memory="512m", build_pids=256,
        build_disk="2g", builds_on_host=True, keep_releases=3, retention_interval=0.5,
    )  # fmt: skip
    assert settings.network_mode == "auto"
    assert (settings.keep_releases, settings.retention_every) == (3, 1800.0)
    assert (settings.build_image, settings.build_cpus, settings.build_pids) == ("mine:1", 1.5, 256)
    assert (settings.build_memory, settings.build_disk) == (512 * 1024**2, 2 * 1024**3)
    assert settings.builds_on_host
    for bad, named in (
        ({"network_mode": "overlay"}, "--network-mode"),
        ({"build_memory": "lots"}, "--build-memory"),
        ({"build_cpus": 0.0}, "--build-cpus"),
        ({"build_pids": 10}, "--build-pids"),
        ({"keep_releases": 0}, "--keep-releases"),
        ({"retention_interval": -1.0}, "--retention-interval"),
    ):
        arguments: dict[str, Any] = {"network_mode": None, **bad}
        mode = arguments.pop("network_mode")
        with pytest.raises(UsageError, match=named):
            platform_settings(tmp_path, None, None, mode, None, **arguments)


def test_an_upgrade_keeps_the_running_control_plane_s_build_options(tmp_path: Path) -> None:
    """The unit's (or `up -d`'s) argv is how the running control plane was started: the new
    one keeps its network mode, build and retention options, as it keeps its ports."""
    old = Settings(
        data_dir=tmp_path, api_port=7101, registry_port=7102, network_mode="auto",
        build_image="mine:1", build_cpus=1.5, build_memory=3 * 1024**3, build_pids=300,
        build_disk=5 * 1024**3, builds_on_host=True, keep_releases=4, retention_every=0.0,
        engine="swarm", engine_endpoint="unix:///run/stackyard-swarm/n1.sock",
        task_registry="10.0.0.5:5000",
    )  # fmt: skip
    state = PlatformState(
        pid=1, api_url="http://127.0.0.1:7101", registry="127.0.0.1:7102",
        router_admin="unix:/x", token_file="t",
    )  # fmt: skip
    assert "--keep-releases 4 --retention-interval 0" in shlex.join(foreground_argv(old))
    running = RunningControlPlane(state, tuple(foreground_argv(old)), {}, None)
    new = settings_of(
        Settings(data_dir=tmp_path, network_mode="host"), running, settings_of_command_line
    )
    assert new == old


def test_service_install_takes_every_option_up_takes(tmp_path: Path) -> None:
    """One list of options serves both: the unit runs `up` with the engine asked for."""
    units = tmp_path / "units"
    installed = subprocess.run(
        [sys.executable, "-m", "stackyard", "service", "install", "--unit-dir", str(units),
         "--system", "--data-dir", str(tmp_path / "data"), "--engine", "swarm",
         "--engine-endpoint", "unix:///run/stackyard-swarm/n1.sock", "--task-registry",
         "10.0.0.5:5000", "--keep-releases", "4", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    text = (units / "stackyard.service").read_text()
    assert "--engine swarm --engine-endpoint unix:///run/stackyard-swarm/n1.sock" in text
    assert "--task-registry 10.0.0.5:5000" in text
    assert "--keep-releases 4" in text


def test_a_command_line_this_version_cannot_read_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match=r"\(up --bogus\): No such option: --bogus"):
        settings_of_command_line(["--bogus"])
