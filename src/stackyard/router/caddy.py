"""The ``caddy`` Router: serves stages through Caddy, whose routes find tasks over DNS SRV.

The deployment executor calls it. Creating or removing a route is one small PUT/PATCH/
DELETE on Caddy's admin API (never a full ``/load``), sent to every Caddy of the data
plane (two, on the same ports, so that one can restart while the other serves). Caddy's
admin API listens on a unix socket only (mode 0600): a task cannot reach it. Switching a
route's upstreams changes no Caddy config at all: each route looks its upstreams up from
the data plane's DNS responder (router/directory.py), so no reload can reset a client
connection.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from stackyard.errors import ComponentError, NotFoundError, RetryableError, StackyardError
from stackyard.router.base import Route, Router
from stackyard.router.directory import DirectoryClient, srv_name

# The Host header every admin request carries; the base config allows only this origin.
ADMIN_HOST = "caddy-admin"
HOSTS_SERVER = "stackyard-hosts"  # shared by host routes; not "sy-" so no stage can clash
HOSTS_FALLBACK = "stackyard-hosts-fallback"
PREFIX = "sy-"
SERVERS = "/config/apps/http/servers"
# How often Caddy asks for a route's upstreams: the longest a switch takes to apply.
REFRESH = "25ms"
# A request that meets an upstream which just went away is tried on another one.
LOAD_BALANCING = {
    "selection_policy": {"policy": "round_robin"},
    "try_duration": "2s",
    "try_interval": "100ms",
}
_IDEMPOTENT = frozenset({"GET", "PATCH", "DELETE"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)

Json = dict[str, Any]


@dataclass(frozen=True)
class AdminRequest:
    """One change to Caddy's config, as plain data: what ``ensure_route`` decided to send."""

    method: str
    path: str
    body: Any = None


# Deciding: route -> Caddy JSON ----------------------------------------------------------


def server_id(name: str) -> str:
    return f"{PREFIX}{name}"


def proxy_id(name: str) -> str:
    return f"{PREFIX}{name}-proxy"


def host_route_id(name: str) -> str:
    return f"{PREFIX}{name}-host"


def handler(name: str, resolver: str) -> Json:
    """reverse_proxy whose upstreams come from SRV records on the router's DNS responder."""
    dns = {"addresses": [f"udp/{resolver}"]}
    return {
        "@id": proxy_id(name),
        "handler": "reverse_proxy",
        "dynamic_upstreams": {
            "source": "srv",
            "name": srv_name(name),
            "refresh": REFRESH,
            "resolver": dns,
        },
        # SRV targets are names in our zone; the same responder resolves them to 127.0.0.1.
        "transport": {"protocol": "http", "resolver": dns},
        "load_balancing": LOAD_BALANCING,
    }


def port_server(route: Route, resolver: str, listen_host: str) -> Json:
    return {
        "listen": [f"{listen_host}:{route.port}"],
        "routes": [{"handle": [handler(route.name, resolver)]}],
        "automatic_https": {"disable": True},
    }


def host_route(route: Route, resolver: str) -> Json:
    return {
        "@id": host_route_id(route.name),
        "match": [{"host": [route.host]}],
        "handle": [handler(route.name, resolver)],
        "terminal": True,
    }


def hosts_server(listen: str, first: Json) -> Json:
    fallback = {
        "@id": HOSTS_FALLBACK,
        "handle": [
            {
                "handler": "static_response",
                "status_code": 404,
                "body": "Stackyard: no stage is served on this host name\n",
            }
        ],
    }
    return {"listen": [listen], "routes": [first, fallback], "automatic_https": {"disable": True}}


def servers_of(config: Any) -> Json:
    """``apps.http.servers`` of a full Caddy config, ``{}`` when Caddy has none."""
    node: Any = config
    for key in ("apps", "http", "servers"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _hosts_routes(servers: Json) -> list[Json]:
    routes = servers.get(HOSTS_SERVER, {}).get("routes") or []
    return [r for r in routes if isinstance(r, dict)]


def route_names(config: Any) -> list[str]:
    """Names of the Stackyard routes in a full Caddy config: port servers and host routes."""
    servers = servers_of(config)
    names = {key.removeprefix(PREFIX) for key in servers if key.startswith(PREFIX)}
    for entry in _hosts_routes(servers):
        rid = str(entry.get("@id", ""))
        if rid.startswith(PREFIX) and rid.endswith("-host"):
            names.add(rid.removeprefix(PREFIX).removesuffix("-host"))
    return sorted(names)


@dataclass(frozen=True)
class FoundRoutes:
    """The Stackyard routes of a Caddy config: each with the DNS resolver it asks for its
    upstreams, and the port of the shared host-name server (if there is one)."""

    routes: tuple[tuple[Route, str | None], ...]
    host_port: int | None


def _resolver_of(handlers: Any) -> str | None:
    for handle in handlers if isinstance(handlers, list) else []:
        addresses = (
            handle.get("dynamic_upstreams", {}).get("resolver", {}).get("addresses", [])
            if isinstance(handle, dict)
            else []
        )
        if addresses:
            return str(addresses[0]).removeprefix("udp/")
    return None


def _port_of(listen: Any) -> int | None:
    if isinstance(listen, list) and listen:
        tail = str(listen[0]).rpartition(":")[2]
        return int(tail) if tail.isdigit() else None
    return None


def routes_in(config: Any) -> FoundRoutes:
    """Every Stackyard route in a full Caddy config, as ``Route``s (a port server or a
    host route), read back the way ``plan_ensure`` writes them."""
    servers = servers_of(config)
    found: list[tuple[Route, str | None]] = []
    for key, server in sorted(servers.items()):
        if not key.startswith(PREFIX) or not isinstance(server, dict):
            continue
        port = _port_of(server.get("listen"))
        routes = server.get("routes") or [{}]
        handle = routes[0].get("handle") if isinstance(routes[0], dict) else None
        if port is not None:
            found.append((Route(key.removeprefix(PREFIX), port=port), _resolver_of(handle)))
    for entry in _hosts_routes(servers):
        rid = str(entry.get("@id", ""))
        hosts = [m.get("host", []) for m in entry.get("match", []) if isinstance(m, dict)]
        if rid.startswith(PREFIX) and rid.endswith("-host") and hosts and hosts[0]:
            name = rid.removeprefix(PREFIX).removesuffix("-host")
            found.append((Route(name, host=str(hosts[0][0])), _resolver_of(entry.get("handle"))))
    hosts_server = servers.get(HOSTS_SERVER)
    host_port = _port_of(hosts_server.get("listen")) if isinstance(hosts_server, dict) else None
    return FoundRoutes(tuple(found), host_port)


def plan_ensure(
    config: Any, route: Route, resolver: str, *, listen_host: str, host_port: int
) -> list[AdminRequest]:
    """The admin requests that make ``config`` serve ``route``; none when it already does."""
    servers = servers_of(config)
    if route.host is None:
        plan = _plan_remove_host_route(servers, route.name)
        wanted = port_server(route, resolver, listen_host)
        current = servers.get(server_id(route.name))
        path = f"{SERVERS}/{server_id(route.name)}"
        if current is None:
            plan.append(AdminRequest("PUT", path, wanted))
        elif current != wanted:
            plan.append(AdminRequest("PATCH", path, wanted))
        return plan
    plan = _plan_remove_port_server(servers, route.name)
    wanted = host_route(route, resolver)
    listen = f"{listen_host}:{host_port}"
    hosts = servers.get(HOSTS_SERVER)
    if hosts is None:
        return [
            *plan,
            AdminRequest("PUT", f"{SERVERS}/{HOSTS_SERVER}", hosts_server(listen, wanted)),
        ]
    if hosts.get("listen") != [listen]:
        plan.append(AdminRequest("PATCH", f"{SERVERS}/{HOSTS_SERVER}/listen", [listen]))
    current = next((r for r in _hosts_routes(servers) if r.get("@id") == wanted["@id"]), None)
    if current is None:
        # PUT on an array index inserts: host routes go before the 404 fallback.
        plan.append(AdminRequest("PUT", f"{SERVERS}/{HOSTS_SERVER}/routes/0", wanted))
    elif current != wanted:
        plan.append(AdminRequest("PATCH", f"/id/{wanted['@id']}", wanted))
    return plan


def plan_remove(config: Any, name: str) -> list[AdminRequest]:
    """The admin requests that stop serving route ``name``, whichever kind it is."""
    servers = servers_of(config)
    return [*_plan_remove_port_server(servers, name), *_plan_remove_host_route(servers, name)]


def _plan_remove_port_server(servers: Json, name: str) -> list[AdminRequest]:
    if server_id(name) not in servers:
        return []
    return [AdminRequest("DELETE", f"{SERVERS}/{server_id(name)}")]


def _plan_remove_host_route(servers: Json, name: str) -> list[AdminRequest]:
    if all(r.get("@id") != host_route_id(name) for r in _hosts_routes(servers)):
        return []
    return [AdminRequest("DELETE", f"/id/{host_route_id(name)}")]


# Doing: the admin API client ------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__(ADMIN_HOST, timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()  # httpcore 1.0's unix connect leaves it open on failure
            raise
        self.sock = sock


class UnixSocketTransport(httpx.BaseTransport):
    """HTTP/1.1 over a unix socket, one connection per request, for Caddy's admin API.

    httpx's own ``uds`` transport leaks the socket of a connection that fails (the admin
    socket of a Caddy that is restarting); this one closes it. Errors are httpx's: a
    failed connect is ``ConnectError`` (nothing was sent), anything later ``ReadError``.
    """

    def __init__(self, socket_path: str | Path, timeout: float | None = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            try:
                connection.connect()
            except TimeoutError as exc:
                raise httpx.ConnectTimeout(str(exc), request=request) from exc
            except OSError as exc:
                raise httpx.ConnectError(str(exc), request=request) from exc
            try:
                connection.request(
                    request.method,
                    request.url.raw_path.decode(),
                    body=request.read(),
                    headers=dict(request.headers),
                )
                answer = connection.getresponse()
                content = answer.read()
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc), request=request) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            return httpx.Response(
                answer.status, headers=answer.getheaders(), content=content, request=request
            )
        finally:
            connection.close()


class CaddyAdmin:
    """One Caddy's admin API on its unix socket."""

    def __init__(
        self,
        socket_path: Path,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.retries = max(0, retries)
        self.backoff = backoff
        # trust_env=False: an HTTP(S)_PROXY must never carry the admin API.
        # No keep-alive: Caddy restarts its admin endpoint on each config change, and a
        # request sent on a pooled socket it closed could not be told apart from a lost one.
        self._client = httpx.Client(
            base_url=f"http://{ADMIN_HOST}",
            timeout=timeout,
            transport=transport or UnixSocketTransport(socket_path, timeout),
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def __str__(self) -> str:
        return f"unix:{self.socket_path}"

    def close(self) -> None:
        self._client.close()

    def config(self) -> Any:
        return self.send(AdminRequest("GET", "/config/")).json()

    def send(
        self, change: AdminRequest, *, missing_ok: bool = False, retries: int | None = None
    ) -> httpx.Response:
        """Send one admin request; retry what cannot have been applied twice."""
        attempts = 1 + (self.retries if retries is None else retries)
        attempt = 0
        while True:
            try:
                response = self._client.request(change.method, change.path, json=change.body)
            except httpx.TransportError as exc:
                attempt += 1
                retryable = change.method in _IDEMPOTENT or isinstance(exc, _NOT_SENT)
                if not retryable or attempt >= attempts:
                    raise RetryableError(
                        f"Caddy's admin API at {self} failed on {change.method} "
                        f"{change.path}: {exc or type(exc).__name__}",
                        hint="check that Caddy runs (`stackyard status`); the change can be "
                        "retried",
                    ) from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            return self._checked(change, response, missing_ok=missing_ok)

    def _checked(
        self, change: AdminRequest, response: httpx.Response, *, missing_ok: bool
    ) -> httpx.Response:
        if response.is_success or (missing_ok and response.status_code == 404):
            return response
        try:
            text = str(response.json().get("error") or response.text)
        except ValueError:
            text = response.text
        raise ComponentError(
            f"Caddy at {self} refused {change.method} {change.path} "
            f"(HTTP {response.status_code}): {text.strip()}",
            hint="a port may be taken by another process; Caddy's log has the details",
        )


class CaddyRouter(Router):
    """Port routes are Caddy servers ``sy-<name>``; host routes share ``stackyard-hosts``.

    ``admin_sockets`` are the admin API sockets of the data plane's Caddy processes, which
    all serve the same routes; ``directory`` is the control socket of the DNS responder
    their routes ask for upstreams. A change goes to every Caddy; one that does not answer
    (it is restarting) fails the call, which the controller retries.
    """

    name: ClassVar[str] = "caddy"
    supports_host_routes: ClassVar[bool] = True

    def __init__(
        self,
        admin_sockets: Sequence[str | Path],
        directory: str | Path,
        *,
        host_port: int = 80,
        listen_host: str = "127.0.0.1",
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.1,
        transport_for: Callable[[Path], httpx.BaseTransport] | None = None,
    ) -> None:
        if not admin_sockets:
            raise ComponentError("the caddy router needs at least one admin socket")
        self.host_port = host_port
        self.listen_host = listen_host
        self.admins = [
            CaddyAdmin(
                Path(path),
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                transport=transport_for(Path(path)) if transport_for else None,
            )
            for path in admin_sockets
        ]
        self.directory = DirectoryClient(directory, timeout=timeout)

    def close(self) -> None:
        for admin in self.admins:
            admin.close()

    def __enter__(self) -> CaddyRouter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Router --------------------------------------------------------------------------

    def ensure_route(self, route: Route, upstreams: Sequence[str]) -> None:
        route.check()
        self.directory.set(route.name, upstreams)
        resolver = self.directory.resolver()

        def ensure(admin: CaddyAdmin) -> None:
            plan = plan_ensure(
                admin.config(),
                route,
                resolver,
                listen_host=self.listen_host,
                host_port=self.host_port,
            )
            for change in plan:
                admin.send(change)

        self._on_each(ensure)

    def set_upstreams(self, route: Route, upstreams: Sequence[str]) -> None:
        """No admin request that changes Caddy: the route's SRV answer changes instead."""
        if self.upstreams(route) is None:
            raise NotFoundError(
                f"a Caddy of the data plane has no route '{route.name}'",
                hint="create it with ensure_route; a Caddy that restarts without its saved "
                "config forgets its routes",
            )
        self.directory.set(route.name, upstreams)

    def upstreams(self, route: Route) -> list[str] | None:
        """None unless every Caddy serves the route; then the responder's upstreams."""
        route.check()
        for admin in self.admins:
            found = admin.send(AdminRequest("GET", f"/id/{proxy_id(route.name)}"), missing_ok=True)
            if found.status_code == 404:
                return None
        return self.directory.get(route.name) or []

    def remove_route(self, route: Route) -> None:
        route.check()

        def remove(admin: CaddyAdmin) -> None:
            for change in plan_remove(admin.config(), route.name):
                admin.send(change, missing_ok=True)

        self._on_each(remove)
        self.directory.drop(route.name)

    def routes(self) -> list[str]:
        return sorted({name for admin in self.admins for name in route_names(admin.config())})

    def ping(self) -> None:
        for admin in self.admins:
            try:
                admin.send(AdminRequest("GET", "/config/"), retries=0)
            except RetryableError as exc:
                raise ComponentError(
                    f"Caddy's admin API does not answer at {admin}",
                    hint="start the platform with `stackyard up` (it starts the data plane), "
                    "or read the Caddy logs in the data directory's logs/",
                ) from exc
        try:
            self.directory.resolver()
        except RetryableError as exc:
            raise ComponentError(
                f"the upstream responder does not answer at {self.directory.socket_path}",
                hint="start the platform with `stackyard up`, or read logs/dataplane.log",
            ) from exc

    def _on_each(self, change: Callable[[CaddyAdmin], None]) -> None:
        """Apply ``change`` to every Caddy, then raise the first failure, if any: the others
        are not held back by one that is restarting."""
        failures: list[StackyardError] = []
        for admin in self.admins:
            try:
                change(admin)
            except StackyardError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
