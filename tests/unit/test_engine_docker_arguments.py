"""The docker engine's container arguments, decided as plain data: no engine needed.

Bridge networking cannot run on these machines (dockerd has --bridge=none), so what the
engine asks Docker for in bridge mode is checked here by equality.
"""

from __future__ import annotations

from stackyard.engines.base import LABEL_PORT, TaskSpec
from stackyard.engines.docker import container_arguments

IMAGE = "127.0.0.1:5000/hello@sha256:" + "a" * 64


def spec(**changes: object) -> TaskSpec:
    fields: dict[str, object] = {
        "name": "sy-hello-dev-r1-abc",
        "image": IMAGE,
        "port": 21000,
        "labels": {"dev.stackyard.stack": "hello"},
        "env": {"GREETING": "hi"},
        "cpu": 0.5,
        "memory": 256 * 1024 * 1024,
        "stop_timeout": 2.5,
    }
    fields.update(changes)
    return TaskSpec(**fields)  # type: ignore[arg-type]


def test_host_mode_binds_loopback_on_the_task_port() -> None:
    arguments, host = container_arguments(spec())
    assert arguments == {
        "name": "sy-hello-dev-r1-abc",
        "labels": {"dev.stackyard.stack": "hello", LABEL_PORT: "21000"},
        "environment": {"GREETING": "hi", "PORT": "21000", "HOST": "127.0.0.1"},
        "ports": None,
        "stop_signal": "SIGTERM",
        "stop_timeout": 3,
    }
    assert host == {
        "init": True,
        "nano_cpus": 500_000_000,
        "mem_limit": 256 * 1024 * 1024,
        "memswap_limit": 256 * 1024 * 1024,
        "restart_policy": {"Name": "no"},
        "network_mode": "host",
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL",
                    "NET_BIND_SERVICE"],
        "pids_limit": 1024,
    }  # fmt: skip


def test_a_read_only_stage_gets_a_read_only_root_with_tmp_and_run_in_memory() -> None:
    _, host = container_arguments(spec(read_only=True, pids_limit=64))
    assert host["read_only"] is True
    assert host["tmpfs"] == {"/tmp": "mode=1777", "/run": "mode=755"}
    assert host["pids_limit"] == 64
    _, writable = container_arguments(spec())
    assert "read_only" not in writable
    assert "tmpfs" not in writable


def test_bridge_mode_publishes_the_container_port_on_loopback_only() -> None:
    arguments, host = container_arguments(spec(network_mode="bridge", container_port=8080))
    assert arguments["environment"] == {"GREETING": "hi", "PORT": "8080", "HOST": "0.0.0.0"}
    assert arguments["ports"] == [(8080, "tcp")]
    assert host["port_bindings"] == {"8080/tcp": ("127.0.0.1", 21000)}
    assert "network_mode" not in host


def test_platform_variables_win_over_stage_variables() -> None:
    arguments, _ = container_arguments(spec(env={"PORT": "1", "HOST": "evil"}))
    assert (arguments["environment"]["PORT"], arguments["environment"]["HOST"]) == (
        "21000",
        "127.0.0.1",
    )
