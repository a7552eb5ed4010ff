"""One registry of seam implementations, by entry point: built-ins register like plugins.

Groups: ``stackyard.engines``, ``stackyard.routers``, ``stackyard.sources``. A third-party
package adds its own adapter by declaring an entry point in one of these groups.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from stackyard.errors import UsageError

GROUPS = {
    "engine": "stackyard.engines",
    "router": "stackyard.routers",
    "source": "stackyard.sources",
}


def available(kind: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUPS[kind]))


def load(kind: str, name: str) -> Any:
    """The class registered as ``name`` for ``kind`` (engine, router or source)."""
    found = entry_points(group=GROUPS[kind], name=name)
    for entry in found:
        return entry.load()
    names = ", ".join(available(kind)) or "none installed"
    raise UsageError(
        f"no {kind} named '{name}' (available: {names})",
        hint=f"install the package that provides it, or pick one of the available {kind}s",
    )
