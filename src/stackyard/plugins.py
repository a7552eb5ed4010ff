"""One registry of seam implementations, by entry point: built-ins register like plugins.

Groups: ``stackyard.engines``, ``stackyard.routers``, ``stackyard.sources``,
``stackyard.registries`` and ``stackyard.channels`` (notification channels). A third-party
package adds its own adapter by declaring an entry point in one of these groups that names
its class. ``engine(name)`` and its siblings hand out the class, checked to be of the right
seam; ``create(cls, offers(...)[kind])`` makes an adapter with the settings it takes. The
platform wires them in ``pipeline/services.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar, cast

from stackyard.errors import UsageError

if TYPE_CHECKING:
    from stackyard.channels.base import Channel
    from stackyard.engines.base import Engine
    from stackyard.images.registry_base import Registry
    from stackyard.router.base import Router
    from stackyard.settings import Settings
    from stackyard.source.base import Source

GROUPS = {
    "engine": "stackyard.engines",
    "router": "stackyard.routers",
    "source": "stackyard.sources",
    "registry": "stackyard.registries",
    "channel": "stackyard.channels",
}

T = TypeVar("T")


def available(kind: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUPS[kind]))


def load(kind: str, name: str) -> Any:
    """What the entry point ``name`` of ``kind`` (engine, router, source, registry) names."""
    found = entry_points(group=GROUPS[kind], name=name)
    for entry in found:
        return entry.load()
    names = ", ".join(available(kind)) or "none installed"
    raise UsageError(
        f"no {kind} named '{name}' (available: {names})",
        hint=f"install the package that provides it, or pick one of the available {kind}s",
    )


def engine(name: str) -> type[Engine]:
    """The Engine class registered as ``name`` in ``stackyard.engines``."""
    from stackyard.engines.base import Engine

    return cast("type[Engine]", _seam_class("engine", name, Engine))


def router(name: str) -> type[Router]:
    """The Router class registered as ``name`` in ``stackyard.routers``."""
    from stackyard.router.base import Router

    return cast("type[Router]", _seam_class("router", name, Router))


def source(name: str) -> type[Source]:
    """The Source class registered as ``name`` in ``stackyard.sources``."""
    from stackyard.source.base import Source

    return cast("type[Source]", _seam_class("source", name, Source))


def registry(name: str) -> type[Registry]:
    """The Registry class registered as ``name`` in ``stackyard.registries``."""
    from stackyard.images.registry_base import Registry

    return cast("type[Registry]", _seam_class("registry", name, Registry))


def channel(name: str) -> type[Channel]:
    """The notification Channel class registered as ``name`` in ``stackyard.channels``."""
    from stackyard.channels.base import Channel

    return cast("type[Channel]", _seam_class("channel", name, Channel))


def _seam_class(kind: str, name: str, base: type) -> type:
    # ``base`` is abstract, which mypy refuses for ``type[T]``: the callers cast the result.
    found = load(kind, name)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise UsageError(
            f"the {kind} '{name}' in entry point group {GROUPS[kind]} is {found!r}, "
            f"not a subclass of {base.__name__}",
            hint="fix the entry point in the package that declares it: it must name the class",
        )
    return found


def offers(settings: Settings, *, username: str, password: str) -> dict[str, dict[str, object]]:
    """The settings the platform offers each kind of adapter, from its own settings.

    ``username`` and ``password`` are the embedded registry's login. An adapter takes the
    ones its constructor names (see `create`); a new adapter that needs more reads them
    from its own configuration.
    """
    return {
        "engine": {"endpoint": settings.engine_endpoint},
        "router": {
            "admin_sockets": [str(path) for path in settings.caddy_admin_sockets],
            "directory": str(settings.dataplane_socket),
            "host_port": settings.http_port,
            "https_port": settings.https_port,
            "hosts_listen": settings.public_address,
            "acme_ca": settings.acme_ca,
            "acme_email": settings.acme_email,
            "acme_roots": list(settings.acme_roots),
            "acme_eab_key_id": settings.acme_eab_kid,
            "acme_eab_mac_key": settings.acme_eab_hmac,
        },
        "source": {"cache_dir": settings.data_dir / "git"},
        "registry": {
            "endpoint": settings.registry_endpoint,
            "username": username,
            "password": password,
        },
    }


def create(cls: type[T], offered: Mapping[str, object]) -> T:
    """Make an adapter, passing it the settings it takes out of those the platform offers.

    An adapter's settings are its constructor's keyword arguments. The platform offers
    each kind of adapter a fixed set (`offers`); the adapter gets those its constructor
    names, or all of them when it takes ``**settings``. A setting it requires that is not
    offered is a UsageError naming the adapter and the setting.
    """
    parameters = list(inspect.signature(cls).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return cls(**offered)
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in parameters if p.kind in by_keyword}
    lacking = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind is not inspect.Parameter.VAR_POSITIONAL
        and (p.kind not in by_keyword or p.name not in offered)
    ]
    if lacking:
        label = getattr(cls, "name", cls.__name__)
        raise UsageError(
            f"the adapter {cls.__name__} ('{label}') needs {', '.join(lacking)}, which the "
            f"platform does not offer it (it offers: {', '.join(sorted(offered)) or 'nothing'})",
            hint="give those constructor arguments defaults, as keyword arguments, or read "
            "them from the adapter's own configuration",
        )
    return cls(**{key: value for key, value in offered.items() if key in names})
