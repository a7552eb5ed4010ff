"""`up -d` and `down`: start the control plane as a background process, stop it by pid;
`down --all` stops the data plane too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stackyard.errors import ComponentError
from stackyard.platform.acme import EAB_HMAC_ENV
from stackyard.platform.state import PlatformState, pid_alive, signal_pids, wait_gone
from stackyard.platform.supervisor import tail
from stackyard.settings import Settings

# The domain options of `up` that differ from their defaults are written into the command
# line of a control plane started in the background (`upgrade` reads it back with `up`'s
# own options).
DOMAIN_OPTIONS = (
    ("--domain", "base_domain"),
    ("--acme-email", "acme_email"),
    ("--acme-ca", "acme_ca"),
    ("--acme-eab-kid", "acme_eab_kid"),  # its HMAC key stays sealed in the data directory
    ("--http-port", "http_port"),
    ("--https-port", "https_port"),
    ("--public-address", "public_address"),
    ("--public-api", "public_api"),
    ("--certificate-warning-days", "certificate_warning_days"),
    ("--certificate-check-interval", "certificate_check_interval"),
    ("--traffic-retention-days", "traffic_retention_days"),
)


def foreground_argv(settings: Settings) -> list[str]:
    argv = [
        sys.executable, "-m", "stackyard", "up",
        "--data-dir", str(settings.data_dir),
        "--api-port", str(settings.api_port),
        "--registry-port", str(settings.registry_port),
        "--network-mode", settings.network_mode,
        "--engine", settings.engine,
        *(["--engine-endpoint", settings.engine_endpoint] if settings.engine_endpoint else []),
        *(["--task-registry", settings.task_registry] if settings.task_registry else []),
        "--build-image", settings.build_image,
        "--build-cpus", str(settings.build_cpus),
        "--build-memory", str(settings.build_memory),
        "--build-pids", str(settings.build_pids),
        "--build-disk", str(settings.build_disk),
        "--keep-releases", str(settings.keep_releases),
        "--retention-interval", f"{settings.retention_every / 3600:g}",
    ]  # fmt: skip
    if settings.public_url:
        argv += ["--public-url", settings.public_url]
    defaults = Settings(data_dir=settings.data_dir)
    for option, field in DOMAIN_OPTIONS:
        value = getattr(settings, field)
        if value != getattr(defaults, field):
            argv += [option, str(value)]
    for root in settings.acme_roots:
        argv += ["--acme-ca-roots", root]
    return [*argv, "--builds-on-host"] if settings.builds_on_host else argv


def start_background(settings: Settings) -> PlatformState:
    """Start ``stackyard up`` detached, wait until its API answers, return its state."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "platform.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            foreground_argv(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The HMAC key is sealed in the data directory already: not in its environment.
            env={k: v for k, v in os.environ.items() if k != EAB_HMAC_ENV},
        )
    deadline = time.monotonic() + settings.component_timeout + 10
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ComponentError(
                f"the platform exited with status {code} while starting; "
                f"last lines of {log_path}:\n{tail(log_path, 15)}"
            )
        state = PlatformState.read(settings.state_file)
        if state is not None and state.pid == process.pid and api_answers(state.api_url):
            return state
        time.sleep(0.02)
    process.terminate()
    raise ComponentError(
        f"the platform did not become ready in time; see {log_path}",
        hint="run `stackyard up` in the foreground to see what it is waiting for",
    )


def api_answers(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _is_stackyard(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"stackyard" in cmdline


def stop_control_plane(settings: Settings, timeout: float = 30.0) -> PlatformState | None:
    """Stop the control plane of this data dir by the pid it recorded; None if none ran.

    The data plane keeps serving the apps. A platform of an earlier version, whose
    registry and Caddy were its children, stops them itself; any that outlived it go too.
    """
    state = PlatformState.read(settings.state_file)
    if state is None:
        return None
    legacy = [pid for pid in state.children.values() if pid_alive(pid)] if state.legacy else []
    if pid_alive(state.pid) and _is_stackyard(state.pid):
        os.kill(state.pid, signal.SIGTERM)
        wait_gone([state.pid], timeout)
    if pid_alive(state.pid) and _is_stackyard(state.pid):
        os.kill(state.pid, signal.SIGKILL)
        wait_gone([state.pid], 5.0)
    leftover = wait_gone(legacy, 2.0)
    signal_pids(leftover, signal.SIGTERM)
    signal_pids(wait_gone(leftover, 5.0), signal.SIGKILL)
    current = PlatformState.read(settings.state_file)
    if current is not None and current.pid == state.pid:
        settings.state_file.unlink(missing_ok=True)
    return state
