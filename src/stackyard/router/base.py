"""The Router seam: send a stage's traffic to its healthy tasks, and change that safely.

A route belongs to one stage and keeps its address (a loopback port, or a host name)
across deployments; only its upstreams change. ``caddy`` implements it through Caddy's
admin API; ``FakeRouter`` (router/fake.py) implements it in memory for unit tests.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, get_args

from stackyard.errors import UsageError

# How a host route is served: ``acme`` (a certificate from an ACME CA, HTTP redirects to
# HTTPS), ``internal`` (the router's own local CA, for private names), ``off`` (plain HTTP).
TlsMode = Literal["acme", "internal", "off"]
TLS_MODES: tuple[str, ...] = get_args(TlsMode)

# Route names become router object ids (Caddy's ``@id``) and URL path segments.
_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    """Where a stage is served: a port on the router's address, or a host name on the
    router's shared port. ``Router.url`` gives its address."""

    name: str  # unique per stage, e.g. "hello-dev"
    port: int | None = None
    host: str | None = None
    aliases: tuple[str, ...] = ()  # more host names of the same stage (``domains:``)
    tls: TlsMode = "off"

    @classmethod
    def named(cls, name: str) -> Route:
        """A route known by its name only (its stage's record is gone): enough to remove
        it, as a router removes a route by its name."""
        return cls(name, port=1)

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host name the route answers on: its host first, then its aliases."""
        return (self.host, *self.aliases) if self.host else ()

    def check(self) -> None:
        """Raise UsageError unless a router can serve this route: a safe name, one address."""
        if not _ROUTE_NAME.fullmatch(self.name):
            raise UsageError(
                f"route name '{self.name}' is not usable by a router",
                hint="use lowercase letters, digits, '-', '_' or '.', starting with a letter "
                "or digit (at most 63 characters), e.g. 'hello-dev'",
            )
        if (self.port is None) == (self.host is None):
            raise UsageError(
                f"route '{self.name}' needs exactly one of port or host",
                hint="a stage is served on 127.0.0.1:<port> or on a host name, not both",
            )
        if self.port is not None and not 1 <= self.port <= 65535:
            raise UsageError(f"route '{self.name}': port {self.port} is not in 1-65535")
        for host in (self.host, *self.aliases) if self.host else ():
            if not _HOST_NAME.fullmatch(host):
                raise UsageError(f"route '{self.name}': '{host}' is not a host name")
        if self.aliases and self.host is None:
            raise UsageError(f"route '{self.name}': more host names need a first host name")
        if self.tls not in TLS_MODES:
            raise UsageError(
                f"route '{self.name}': tls '{self.tls}' is not one of {', '.join(TLS_MODES)}"
            )
        if self.tls != "off" and self.host is None:
            raise UsageError(
                f"route '{self.name}': tls '{self.tls}' needs a host name",
                hint="a port route is served on plain HTTP on 127.0.0.1; give the stage a "
                "domain to serve it over HTTPS",
            )


CertificateState = Literal["pending", "valid", "expired", "failed", "none"]


@dataclass(frozen=True)
class Certificate:
    """The certificate of one host name of a route, as the router last saw it."""

    name: str
    state: CertificateState  # "none": the route is served on plain HTTP
    issuer: str = ""
    expires: datetime | None = None
    error: str = ""  # the CA's answer when the last attempt failed
    hint: str = ""  # what to check when it failed

    def describe(self) -> str:
        """``valid (expires 2026-12-01 10:00 UTC)``, ``failed: <error>``, ``pending``."""
        if self.state in ("valid", "expired") and self.expires is not None:
            return f"{self.state} (expires {self.expires:%Y-%m-%d %H:%M} UTC)"
        if self.state == "failed":
            return f"failed: {self.error}"
        return self.state


@dataclass(frozen=True)
class AccessRecord:
    """One request as the router's access log has it."""

    ts: float  # when it came in, unix time
    method: str
    uri: str
    host: str
    status: int
    duration: float  # seconds
    size: int  # bytes of the response body
    client: str  # the client's address
    logger: str = ""  # the router's name for the log that has it (one per route or shared)


@dataclass(frozen=True)
class LogPosition:
    """How far one access log file has been read. The file is known by its identity (device
    and inode: a rolled file keeps it when renamed) and a digest of its first line (an inode
    a new file reuses is another file); ``offset`` is the byte after the last whole line
    read. ``path`` is where it was last seen, for people."""

    path: str
    device: int
    inode: int
    head: str
    offset: int


@dataclass(frozen=True)
class AccessBatch:
    """Requests logged since the positions given, and the positions after them: every log
    file the router has now (those gone are forgotten). ``more``: a read limit stopped it
    before the end of some file; ask again."""

    records: tuple[AccessRecord, ...]
    positions: tuple[LogPosition, ...]
    more: bool = False


class Router(ABC):
    """Implementations register under the ``stackyard.routers`` entry point group."""

    name: ClassVar[str]
    supports_host_routes: ClassVar[bool] = False
    supports_certificates: ClassVar[bool] = False
    supports_access_logs: ClassVar[bool] = False
    listen_host: str = "127.0.0.1"  # where port routes listen; an adapter may set its own

    def url(self, route: Route) -> str:
        """Where clients reach the route: its host name, or the router's address and port."""
        if route.host:
            return f"{'http' if route.tls == 'off' else 'https'}://{route.host}"
        return f"http://{self.listen_host}:{route.port}"

    @abstractmethod
    def ensure_route(self, route: Route, upstreams: Sequence[str]) -> None:
        """Create the route if missing, then set its upstreams (task addresses,
        ``"127.0.0.1:8123"``)."""

    @abstractmethod
    def set_upstreams(self, route: Route, upstreams: Sequence[str]) -> None:
        """Replace the route's upstreams without dropping connections in flight."""

    @abstractmethod
    def upstreams(self, route: Route) -> list[str] | None:
        """The route's current upstreams, or None when the router has no such route."""

    @abstractmethod
    def remove_route(self, route: Route) -> None:
        """Stop serving the route; a route that is already gone is fine."""

    @abstractmethod
    def routes(self) -> list[str]:
        """Names of the routes this router serves for Stackyard."""

    def certificates(self, route: Route) -> list[Certificate]:
        """The certificate state of each of the route's host names."""
        raise UsageError(
            f"the {self.name} router does not manage certificates",
            hint="use the caddy router to serve stages over HTTPS",
        )

    def warm(self, route: Route, names: Sequence[str] = ()) -> None:  # noqa: B027 - optional
        """Have the certificates of ``names`` (none given: every name of the route) obtained
        now rather than at a client's first handshake; in the background. A router that
        manages no certificates does nothing."""

    def renew(self, route: Route) -> list[str]:
        """Renew the certificates of the route's names that the router issues itself and
        that are due; the names renewed. None by default: Caddy renews the certificates
        it obtained from an ACME CA by itself."""
        return []

    def access_records(self, route: Route) -> list[AccessRecord]:
        """The route's requests as the router logged them, oldest first."""
        raise UsageError(
            f"the {self.name} router keeps no access logs",
            hint="use the caddy router to have access logs",
        )

    def access_since(self, positions: Sequence[LogPosition]) -> AccessBatch:
        """Every route's requests logged after ``positions`` (none: from the start of the
        logs the router keeps), whatever route they are for; across restarts and log
        rolling each request is in exactly one batch."""
        raise UsageError(
            f"the {self.name} router keeps no access logs",
            hint="use the caddy router to have access logs",
        )

    def access_keys(self, route: Route) -> list[tuple[str, str | None]]:
        """The (logger, host) pairs of ``AccessRecord``s that are the route's requests; a
        host of None: any host (the logger is the route's own)."""
        raise UsageError(
            f"the {self.name} router keeps no access logs",
            hint="use the caddy router to have access logs",
        )

    def refresh(self) -> None:  # noqa: B027 - optional
        """Bring the router's own shared config to this version's shape, and its routes to
        the data plane that runs now (called when the control plane starts and when the
        data plane was started again); which routes there are is the controller's.
        Nothing by default."""

    def ping(self) -> None:  # noqa: B027 - optional
        """Raise ComponentError when the router does not answer."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the router holds (connections, threads)."""
