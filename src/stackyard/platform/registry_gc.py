"""The registry's garbage collection, with the data plane's registry read-only meanwhile.

``garbage-collect`` removes the blobs no manifest references. A push in the middle could
lose blobs it has just uploaded, so the serving registry is switched read-only first
(``dataplane.set_registry_mode``: pulls go on, pushes get 405, which the platform's own
pushes retry) and back to read-write afterwards, even when the collection fails.
"""

from __future__ import annotations

from collections.abc import Callable

from stackyard.platform.components import plan_registry_gc
from stackyard.platform.dataplane import set_registry_mode
from stackyard.platform.registry_storage import storage_root
from stackyard.platform.supervisor import run_once
from stackyard.settings import Settings

GC_TIMEOUT = 600.0  # seconds the registry's garbage collection may take


def collect_registry_garbage(
    settings: Settings,
    *,
    binary: str | None,
    while_read_only: Callable[[], None] = lambda: None,
) -> str:
    """Run the registry's garbage collection with the registry read-only, then serve again.

    ``while_read_only`` runs inside the read-only window (tests push at that moment).
    Returns the collector's output; raises ComponentError when it fails, or when the data
    plane cannot change the registry's mode.
    """
    if not (storage_root(settings.data_dir) / "repositories").is_dir():
        return "nothing to collect: no image was ever pushed"
    set_registry_mode(settings, "read-only")
    try:
        while_read_only()
        return run_once(plan_registry_gc(settings, binary=binary), timeout=GC_TIMEOUT)
    finally:
        set_registry_mode(settings, "read-write")
