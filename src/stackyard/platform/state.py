"""The running platform's state files: the control plane's (its pid, URLs, the data plane's
pids) for `down` and the CLI, and the data plane keeper's (its pid and components)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stackyard.errors import ComponentError

T = TypeVar("T")


@dataclass(frozen=True)
class PlatformState:
    pid: int
    api_url: str
    registry: str
    router_admin: str
    token_file: str
    children: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0

    @property
    def legacy(self) -> bool:
        """Written by a version whose registry and Caddy were its own children, with Caddy's
        admin API on a TCP port, and whose upstreams lived in its own process."""
        return not self.router_admin.startswith("unix:")

    def write(self, path: Path) -> None:
        _write(self, path)

    @classmethod
    def read(cls, path: Path) -> PlatformState | None:
        return _read(cls, path, "platform state", "if no Stackyard is running, delete the file")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return status != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def signal_pids(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def ensure_platform_id(path: Path) -> str:
    """A random id for this data dir; tasks carry it, so two platforms never mix tasks."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(os.urandom(6).hex() + "\n", encoding="utf-8")
        tmp.replace(path)
    return path.read_text(encoding="utf-8").strip()


def running_state(path: Path) -> PlatformState | None:
    """The state in ``path`` if its platform is running, else None (stale files are ignored).

    Light on purpose: every CLI command calls it to find the API.
    """
    state = PlatformState.read(path)
    if state is None or not pid_alive(state.pid):
        return None
    return state


@dataclass(frozen=True)
class DataplaneRecord:
    """Written by the data plane's keeper: its pid, the upstream responder's address, the
    pid of each component it keeps, and the registry's mode. ``down --all`` and the next
    keeper find the processes by these pids."""

    pid: int
    data_dir: str
    dns: str
    components: dict[str, int] = field(default_factory=dict)
    registry_mode: str = "read-write"
    protocol: int = 1
    started_at: float = 0.0

    def write(self, path: Path) -> None:
        _write(self, path)

    @classmethod
    def read(cls, path: Path) -> DataplaneRecord | None:
        hint = "if no Stackyard data plane runs for this data directory, delete the file"
        return _read(cls, path, "data plane record", hint)


def _write(record: Any, path: Path) -> None:
    """Replace ``path`` at once: a reader sees the old record or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read(cls: type[T], path: Path, what: str, hint: str) -> T | None:
    """The record in ``path``, None when there is none; the fields ``cls`` does not have
    are left out (a newer version may write more)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"not an object: {record!r}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{key: value for key, value in record.items() if key in names})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ComponentError(f"{path}: unreadable {what}: {exc}", hint=hint) from exc
