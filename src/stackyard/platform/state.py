"""The running platform's state file: its pid, URLs and child pids, for `down` and the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stackyard.errors import ComponentError


@dataclass(frozen=True)
class PlatformState:
    pid: int
    api_url: str
    registry: str
    router_admin: str
    token_file: str
    children: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> PlatformState | None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ComponentError(
                f"{path}: unreadable platform state: {exc}",
                hint="if no Stackyard is running, delete the file",
            ) from exc
        return cls(**record)


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
