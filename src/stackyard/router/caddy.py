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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from stackyard.errors import ComponentError, NotFoundError, RetryableError, StackyardError
from stackyard.router.accesslog import access_dir, follow, log_files, read_access
from stackyard.router.base import (
    AccessBatch,
    AccessRecord,
    Certificate,
    LogPosition,
    Route,
    Router,
)
from stackyard.router.certificates import acme_log_path, certificate_of, storage_root
from stackyard.router.directory import DirectoryClient, srv_name

# The Host header every admin request carries; the base config allows only this origin.
ADMIN_HOST = "caddy-admin"
HOSTS_SERVER = "stackyard-hosts"  # shared by host routes; not "sy-" so no stage can clash
HOSTS_FALLBACK = "stackyard-hosts-fallback"
HTTPS_SERVER = "stackyard-https"  # host routes with a certificate (tls: acme or internal)
HTTPS_FALLBACK = "stackyard-https-fallback"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# The Caddy loggers that say how obtaining a certificate went, written to a file per Caddy.
ACME_LOG = "stackyard-acme"
ACME_LOGGERS = ["tls.obtain", "tls.issuance.acme", "http.acme_client"]
# Access logs: one logger per port route, one for every host-name route (its entries name
# the host, which is what routed them).
ACCESS_HOSTS = "sy-access-hosts"
# Caddy's local CA (``tls: internal``) must not add its root to the machine's trust store.
PKI = {"certificate_authorities": {"local": {"install_trust": False}}}
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


def access_logger(name: str) -> str:
    """The access logger of port route ``name``."""
    return f"sy-access-{name}"


def port_server(route: Route, resolver: str, listen_host: str) -> Json:
    return {
        "listen": [f"{listen_host}:{route.port}"],
        "routes": [{"handle": [handler(route.name, resolver)]}],
        "automatic_https": {"disable": True},
        "logs": {"default_logger_name": access_logger(route.name)},
    }


def access_log(path: Path, logger: str) -> Json:
    """A JSON access log in its own file, rolled at 10 MB, 5 files kept, not compressed: a
    rolled file keeps its inode, so the traffic counter reads on where it stopped."""
    return {
        "writer": {
            "output": "file",
            "filename": str(path),
            "roll_size_mb": 10,
            "roll_keep": 5,
            "roll_gzip": False,
        },
        "encoder": {"format": "json"},
        "include": [f"http.log.access.{logger}"],
    }


def tls_route_id(name: str) -> str:
    return f"{PREFIX}{name}-tls"


@dataclass(frozen=True)
class Acme:
    """The ACME CA that certifies ``tls: acme`` routes: Let's Encrypt unless told otherwise.

    ``trusted_roots`` are PEM files to trust for the CA's own HTTPS (a private or test CA);
    ``eab_key_id`` and ``eab_mac_key`` are the CA's External Account Binding, when it asks
    for one.
    """

    ca: str = LETS_ENCRYPT
    email: str = ""
    trusted_roots: tuple[str, ...] = ()
    eab_key_id: str = ""
    eab_mac_key: str = field(default="", repr=False)  # a secret: in no repr, no log

    def issuer(self) -> Json:
        issuer: Json = {"module": "acme", "ca": self.ca}
        if self.email:
            issuer["email"] = self.email
        if self.trusted_roots:
            issuer["trusted_roots_pem_files"] = list(self.trusted_roots)
        if self.eab_key_id:
            issuer["external_account"] = {"key_id": self.eab_key_id, "mac_key": self.eab_mac_key}
        return issuer


def host_route(route: Route, resolver: str) -> Json:
    """A plain-HTTP host route: the stage's names, proxied to its tasks."""
    return {
        "@id": host_route_id(route.name),
        "match": [{"host": list(route.hosts)}],
        "handle": [handler(route.name, resolver)],
        "terminal": True,
    }


def redirect_route(route: Route, https_port: int) -> Json:
    """On the HTTP port, a route with a certificate answers 308 to its HTTPS address. ACME's
    HTTP challenges still work: Caddy answers them before any route."""
    port = "" if https_port == 443 else f":{https_port}"
    return {
        "@id": host_route_id(route.name),
        "match": [{"host": list(route.hosts)}],
        "handle": [
            {
                "handler": "static_response",
                "status_code": 308,
                "headers": {
                    "Location": [f"https://{{http.request.host}}{port}{{http.request.uri}}"]
                },
            }
        ],
        "terminal": True,
    }


def tls_route(route: Route, resolver: str) -> Json:
    """On the HTTPS port: the stage's names, proxied to its tasks."""
    return {
        "@id": tls_route_id(route.name),
        "match": [{"host": list(route.hosts)}],
        "handle": [handler(route.name, resolver)],
        "terminal": True,
    }


def _not_served(fallback_id: str) -> Json:
    return {
        "@id": fallback_id,
        "handle": [
            {
                "handler": "static_response",
                "status_code": 404,
                "body": "Stackyard: no stage is served on this host name\n",
            }
        ],
    }


HOSTS_LOGS = {"default_logger_name": ACCESS_HOSTS}


def hosts_server(listen: str, first: Json) -> Json:
    return {
        "listen": [listen],
        "routes": [first, _not_served(HOSTS_FALLBACK)],
        "automatic_https": {"disable": True},
        "logs": HOSTS_LOGS,
    }


def https_server(listen: str, first: Json) -> Json:
    """TLS on every connection; the certificates come from the tls app's automation, so
    Caddy's automatic HTTPS (which would add servers and redirects of its own) stays off.
    No HTTP/3: its UDP listener has no SO_REUSEPORT, so a second Caddy could not bind."""
    return {
        "listen": [listen],
        "routes": [first, _not_served(HTTPS_FALLBACK)],
        "protocols": ["h1", "h2"],
        "tls_connection_policies": [{}],
        "automatic_https": {"disable": True},
        "logs": HOSTS_LOGS,
    }


def tls_app(modes: dict[str, str], acme_issuer: Json, automate: Iterable[str]) -> Json:
    """Caddy's tls app: the names to ``automate`` (obtain, renew) and, for each name of
    ``modes`` (name -> ``acme``/``internal``), the issuer of its mode.

    The ACME policy names no subjects: it is the fallback for every name, so that every
    Caddy answers an ACME challenge for any name with the same issuer, even one whose
    certificate another Caddy asked for a moment before this one heard of the name.
    """
    internal = sorted(name for name, mode in modes.items() if mode == "internal")
    policies: list[Json] = []
    if internal:
        policies.append({"subjects": internal, "issuers": [{"module": "internal"}]})
    policies.append({"issuers": [acme_issuer]})
    return {"certificates": {"automate": sorted(automate)}, "automation": {"policies": policies}}


def acme_log(path: Path) -> Json:
    """The JSON log of certificate attempts that ``certificates`` reads, capped in size."""
    return {
        "writer": {"output": "file", "filename": str(path), "roll_size_mb": 1, "roll_keep": 2},
        "encoder": {"format": "json"},
        "include": ACME_LOGGERS,
    }


def servers_of(config: Any) -> Json:
    """``apps.http.servers`` of a full Caddy config, ``{}`` when Caddy has none."""
    node: Any = config
    for key in ("apps", "http", "servers"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _server_routes(servers: Json, server: str) -> list[Json]:
    routes = servers.get(server, {}).get("routes") or []
    return [r for r in routes if isinstance(r, dict)]


def _hosts_routes(servers: Json) -> list[Json]:
    return _server_routes(servers, HOSTS_SERVER)


def _named(entry: Json, suffix: str) -> str | None:
    """The route name of a host-name entry whose ``@id`` is ``sy-<name><suffix>``."""
    rid = str(entry.get("@id", ""))
    if rid.startswith(PREFIX) and rid.endswith(suffix):
        return rid.removeprefix(PREFIX).removesuffix(suffix)
    return None


def _hosts_of(entry: Json) -> list[str]:
    matches = [m.get("host", []) for m in entry.get("match", []) if isinstance(m, dict)]
    return [str(host) for host in matches[0]] if matches and matches[0] else []


def route_names(config: Any) -> list[str]:
    """Names of the Stackyard routes in a full Caddy config: port servers and host routes."""
    servers = servers_of(config)
    names = {key.removeprefix(PREFIX) for key in servers if key.startswith(PREFIX)}
    for entry in _hosts_routes(servers):
        name = _named(entry, "-host")
        if name:
            names.add(name)
    return sorted(names)


def _policies(config: Any) -> list[Json]:
    node: Any = config
    for key in ("apps", "tls", "automation", "policies"):
        node = node.get(key) if isinstance(node, dict) else None
    return [p for p in node if isinstance(p, dict)] if isinstance(node, list) else []


def acme_issuer_in(config: Any) -> Json | None:
    """The ACME issuer a config's tls app already uses, if any."""
    for policy in _policies(config):
        for issuer in policy.get("issuers") or []:
            if isinstance(issuer, dict) and issuer.get("module") == "acme":
                return issuer
    return None


def automated(config: Any) -> list[str]:
    """The names whose certificates a config's tls app obtains and renews."""
    node: Any = config
    for key in ("apps", "tls", "certificates", "automate"):
        node = node.get(key) if isinstance(node, dict) else None
    return [str(name) for name in node] if isinstance(node, list) else []


def tls_modes(config: Any) -> dict[str, str]:
    """Each host name the tls app manages -> ``acme`` or ``internal`` (its policy's issuer)."""
    modes = dict.fromkeys(automated(config), "acme")
    for policy in _policies(config):
        issuers = policy.get("issuers") or [{}]
        if issuers[0].get("module") == "internal":
            modes.update({str(name): "internal" for name in policy.get("subjects") or []})
    return modes


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
    modes = tls_modes(config)
    with_tls = {_named(e, "-tls"): e for e in _server_routes(servers, HTTPS_SERVER)}
    for entry in _hosts_routes(servers):
        name, hosts = _named(entry, "-host"), _hosts_of(entry)
        if not name or not hosts:
            continue
        served = with_tls.get(name, entry)  # the proxy is on the HTTPS port when it has TLS
        tls = modes.get(hosts[0], "acme") if name in with_tls else "off"
        route = Route(name, host=hosts[0], aliases=tuple(hosts[1:]), tls=tls)  # type: ignore[arg-type]
        found.append((route, _resolver_of(served.get("handle"))))
    hosts_server = servers.get(HOSTS_SERVER)
    host_port = _port_of(hosts_server.get("listen")) if isinstance(hosts_server, dict) else None
    return FoundRoutes(tuple(found), host_port)


@dataclass(frozen=True)
class Listeners:
    """Where the router's servers listen, and how it gets certificates: a plan's inputs."""

    listen_host: str = "127.0.0.1"
    host_port: int = 80
    https_port: int = 443
    acme: Acme = Acme()
    acme_log: Path | None = None  # this Caddy's log of certificate attempts
    access_dir: Path | None = None  # where this Caddy writes its access logs


def plan_ensure(
    config: Any,
    route: Route,
    resolver: str,
    *,
    listen_host: str,
    host_port: int,
    listeners: Listeners | None = None,
    automate: bool = True,
) -> list[AdminRequest]:
    """The admin requests that make ``config`` serve ``route``; none when it already does.

    A host route with TLS is three entries: a route on the HTTPS server, a 308 redirect
    on the HTTP server, and its names in the tls app (so Caddy obtains and renews their
    certificates). They are written in that order: no name redirects to an HTTPS route
    that is not there yet, and no later change (each is a reload) cancels the first
    attempt to obtain a certificate. With ``automate=False`` the route's new names are
    not automated yet: the router first gives every Caddy the route (and the issuer that
    answers challenges), then has them automate its names.
    """
    at = listeners or Listeners(listen_host=listen_host, host_port=host_port)
    servers = servers_of(config)
    if route.host is None:
        plan = [*_plan_remove_host_route(config, route.name)]
        plan += _plan_logs(config, _wanted_logs(at, access_logger(route.name), tls=False))
        wanted = port_server(route, resolver, listen_host)
        current = servers.get(server_id(route.name))
        path = f"{SERVERS}/{server_id(route.name)}"
        if current is None:
            plan.append(AdminRequest("PUT", path, wanted))
        elif current != wanted:
            plan.append(AdminRequest("PATCH", path, wanted))
        return plan
    plan = _plan_remove_port_server(servers, route.name)
    plan += _plan_logs(config, _wanted_logs(at, ACCESS_HOSTS, tls=route.tls != "off"))
    http_listen = f"{at.listen_host}:{at.host_port}"
    if route.tls == "off":
        plan += _plan_server_route(servers, HOSTS_SERVER, http_listen, host_route(route, resolver))
        plan += _plan_tls_app(config, route.name, {}, None)
        return plan + _plan_remove_entry(servers, HTTPS_SERVER, tls_route_id(route.name))
    plan += _plan_ports(config, at)
    https_listen = f"{at.listen_host}:{at.https_port}"
    plan += _plan_server_route(servers, HTTPS_SERVER, https_listen, tls_route(route, resolver))
    redirect = redirect_route(route, at.https_port)
    plan += _plan_server_route(servers, HOSTS_SERVER, http_listen, redirect)
    own: dict[str, str] = dict.fromkeys(route.hosts, route.tls)
    return plan + _plan_tls_app(config, route.name, own, at.acme, automate=automate)


def _plan_server_route(servers: Json, server: str, listen: str, wanted: Json) -> list[AdminRequest]:
    """Put ``wanted`` into a shared host-name server, creating the server if missing."""
    make = https_server if server == HTTPS_SERVER else hosts_server
    current_server = servers.get(server)
    if current_server is None:
        return [AdminRequest("PUT", f"{SERVERS}/{server}", make(listen, wanted))]
    plan = []
    if current_server.get("listen") != [listen]:
        plan.append(AdminRequest("PATCH", f"{SERVERS}/{server}/listen", [listen]))
    if current_server.get("logs") != HOSTS_LOGS:  # a server from before access logs
        method = "PATCH" if "logs" in current_server else "PUT"
        plan.append(AdminRequest(method, f"{SERVERS}/{server}/logs", HOSTS_LOGS))
    routes = _server_routes(servers, server)
    current = next((r for r in routes if r.get("@id") == wanted["@id"]), None)
    if current is None:
        # PUT on an array index inserts: host routes go before the 404 fallback.
        plan.append(AdminRequest("PUT", f"{SERVERS}/{server}/routes/0", wanted))
    elif current != wanted:
        plan.append(AdminRequest("PATCH", f"/id/{wanted['@id']}", wanted))
    return plan


def _plan_tls_app(
    config: Any, name: str, own: dict[str, str], acme: Acme | None, *, automate: bool = True
) -> list[AdminRequest]:
    """The tls app with route ``name``'s names set to ``own`` (name -> mode), the names of
    the other TLS routes kept; nothing when it already says so. Without ``acme``, the
    ACME issuer stays the one the config has. Without ``automate``, only those of
    ``own`` that are automated already stay so."""
    servers = servers_of(config)
    modes = tls_modes(config)
    wanted: dict[str, str] = {}
    for entry in _server_routes(servers, HTTPS_SERVER):
        other = _named(entry, "-tls")
        if other and other != name:
            wanted.update({host: modes.get(host, "acme") for host in _hosts_of(entry)})
    wanted.update(own)
    apps = config.get("apps", {}) if isinstance(config, dict) else {}
    current = apps.get("tls") if isinstance(apps, dict) else None
    if not wanted and not current:
        return []
    names = set(wanted) if automate else set(wanted) - (set(own) - set(automated(config)))
    issuer = acme.issuer() if acme else acme_issuer_in(config) or Acme().issuer()
    app = tls_app(wanted, issuer, names)
    plan = []
    if "internal" in wanted.values() and apps.get("pki") != PKI:
        plan.append(AdminRequest("PATCH" if "pki" in apps else "PUT", "/config/apps/pki", PKI))
    if current != app:
        method = "PATCH" if current is not None else "PUT"
        plan.append(AdminRequest(method, "/config/apps/tls", app))
    return plan


def _plan_ports(config: Any, at: Listeners) -> list[AdminRequest]:
    """The HTTP app's ports, which Caddy's ACME solvers use for their challenges."""
    apps = config.get("apps", {}) if isinstance(config, dict) else {}
    http = apps.get("http", {}) if isinstance(apps, dict) else {}
    plan = []
    for key, value in (("http_port", at.host_port), ("https_port", at.https_port)):
        if http.get(key) != value:
            method = "PATCH" if key in http else "PUT"
            plan.append(AdminRequest(method, f"/config/apps/http/{key}", value))
    return plan


def _plan_logs(config: Any, wanted: dict[str, Json]) -> list[AdminRequest]:
    """Caddy's ``logging.logs`` entries set to ``wanted``, creating what is missing (one
    request when there is no ``logging`` yet)."""
    if not wanted:
        return []
    logging = config.get("logging") if isinstance(config, dict) else None
    if not isinstance(logging, dict):
        return [AdminRequest("PUT", "/config/logging", {"logs": wanted})]
    logs = logging.get("logs")
    if not isinstance(logs, dict):
        return [AdminRequest("PUT", "/config/logging/logs", wanted)]
    return [
        AdminRequest("PATCH" if key in logs else "PUT", f"/config/logging/logs/{key}", log)
        for key, log in wanted.items()
        if logs.get(key) != log
    ]


def _wanted_logs(at: Listeners, access_logger_name: str, *, tls: bool) -> dict[str, Json]:
    """This Caddy's access log for a route's logger, and its ACME log for a TLS route."""
    wanted: dict[str, Json] = {}
    if at.access_dir is not None:
        path = at.access_dir / f"{access_logger_name}.log"
        wanted[access_logger_name] = access_log(path, access_logger_name)
    if tls and at.acme_log is not None:
        wanted[ACME_LOG] = acme_log(at.acme_log)
    return wanted


def plan_remove(config: Any, name: str) -> list[AdminRequest]:
    """The admin requests that stop serving route ``name``, whichever kind it is."""
    servers = servers_of(config)
    return [*_plan_remove_port_server(servers, name), *_plan_remove_host_route(config, name)]


def _plan_remove_port_server(servers: Json, name: str) -> list[AdminRequest]:
    if server_id(name) not in servers:
        return []
    return [AdminRequest("DELETE", f"{SERVERS}/{server_id(name)}")]


def _plan_remove_entry(servers: Json, server: str, entry_id: str) -> list[AdminRequest]:
    if all(r.get("@id") != entry_id for r in _server_routes(servers, server)):
        return []
    return [AdminRequest("DELETE", f"/id/{entry_id}")]


def _plan_remove_host_route(config: Any, name: str) -> list[AdminRequest]:
    """The redirect (or plain route) first, then the HTTPS route, then its names."""
    servers = servers_of(config)
    return [
        *_plan_remove_entry(servers, HOSTS_SERVER, host_route_id(name)),
        *_plan_remove_entry(servers, HTTPS_SERVER, tls_route_id(name)),
        *_plan_tls_app(config, name, {}, None),
    ]


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
    supports_certificates: ClassVar[bool] = True
    supports_access_logs: ClassVar[bool] = True

    def __init__(
        self,
        admin_sockets: Sequence[str | Path],
        directory: str | Path,
        *,
        host_port: int = 80,
        https_port: int = 443,
        listen_host: str = "127.0.0.1",
        hosts_listen: str | None = None,
        acme_ca: str = LETS_ENCRYPT,
        acme_email: str = "",
        acme_roots: Sequence[str] = (),
        acme_eab_key_id: str = "",
        acme_eab_mac_key: str = "",
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.1,
        transport_for: Callable[[Path], httpx.BaseTransport] | None = None,
    ) -> None:
        if not admin_sockets:
            raise ComponentError("the caddy router needs at least one admin socket")
        self.host_port = host_port
        self.https_port = https_port
        self.listen_host = listen_host
        # Where host-name routes listen: a public domain needs a public address (0.0.0.0);
        # port routes stay on listen_host.
        self.hosts_listen = hosts_listen or listen_host
        self.acme = Acme(
            ca=acme_ca,
            email=acme_email,
            trusted_roots=tuple(str(root) for root in acme_roots),
            eab_key_id=acme_eab_key_id,
            eab_mac_key=acme_eab_mac_key,
        )
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

        def ensure(admin: CaddyAdmin, *, automate: bool) -> None:
            plan = plan_ensure(
                admin.config(),
                route,
                resolver,
                listen_host=self.listen_host,
                host_port=self.host_port,
                listeners=self._listeners(admin),
                automate=automate,
            )
            for change in plan:
                admin.send(change)

        # Every Caddy gets the route before any asks for its certificate: the CA's challenge
        # may reach any of them (they share the ports), and each must know how to answer.
        self._on_each(lambda admin: ensure(admin, automate=False))
        if route.tls != "off":
            self._on_each(lambda admin: ensure(admin, automate=True))

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

    def _listeners(self, admin: CaddyAdmin) -> Listeners:
        return Listeners(
            listen_host=self.hosts_listen,
            host_port=self.host_port,
            https_port=self.https_port,
            acme=self.acme,
            acme_log=acme_log_path(admin.socket_path),
            access_dir=access_dir(admin.socket_path),
        )

    def url(self, route: Route) -> str:
        url = super().url(route)
        port = self.https_port if route.tls != "off" else self.host_port
        default = 443 if route.tls != "off" else 80
        return url if route.host is None or port == default else f"{url}:{port}"

    def certificates(self, route: Route) -> list[Certificate]:
        """Read from Caddy's certificate storage (shared by every Caddy) and from each
        Caddy's log of certificate attempts: no admin request, nothing changes."""
        route.check()
        if route.tls == "off":
            return [Certificate(name, "none") for name in route.hosts]
        storage = storage_root(self.admins[0].config())
        logs = [acme_log_path(admin.socket_path) for admin in self.admins]
        return [certificate_of(name, storage, logs) for name in route.hosts]

    def access_records(self, route: Route) -> list[AccessRecord]:
        """The route's requests from every Caddy's access log (oldest first): a port route
        has its own log, host-name routes share one, told apart by the request's host."""
        route.check()
        logger = access_logger(route.name) if route.host is None else ACCESS_HOSTS
        files = [access_dir(admin.socket_path) / f"{logger}.log" for admin in self.admins]
        return read_access(files, hosts=route.hosts or None)

    def access_since(self, positions: Sequence[LogPosition]) -> AccessBatch:
        """Every Caddy's access log files, current and rolled, read on from ``positions``."""
        return follow(log_files(access_dir(a.socket_path) for a in self.admins), positions)

    def access_keys(self, route: Route) -> list[tuple[str, str | None]]:
        """A port route's requests are those of its own logger; a host route's, those of
        the shared logger for its names (the Host header without its port)."""
        route.check()
        if route.host is None:
            return [(access_logger(route.name), None)]
        return [(ACCESS_HOSTS, host) for host in route.hosts]

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
