"""The ``caddy`` Router: serves stages through Caddy, whose routes find tasks over DNS SRV.

The deployment executor calls it. Creating or removing a route is one small PUT/PATCH/
DELETE on Caddy's admin API (never a full ``/load``), sent to every Caddy of the data
plane (two, on the same ports, so that one can restart while the other serves). Caddy's
admin API listens on a unix socket only (mode 0600): a task cannot reach it. Switching a
route's upstreams changes no Caddy config at all: each route looks its upstreams up from
the data plane's DNS responder (router/directory.py), so no reload can reset a client
connection. Nor does adding or removing a host name: the shared host servers look their
upstreams up by the request's host, and certificates are obtained on demand for the
names the responder approves.
"""

from __future__ import annotations

import http.client
import logging
import secrets
import socket
import ssl
import string
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from stackyard.errors import ComponentError, NotFoundError, RetryableError, StackyardError
from stackyard.router import internal_ca
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
from stackyard.router.directory import (
    ASK_SRV_NAME,
    HOST_SRV_NAME,
    TLS_SRV_NAME,
    DirectoryClient,
    NameChange,
    srv_name,
)

# The Host header every admin request carries; the base config allows only this origin.
ADMIN_HOST = "caddy-admin"
HOSTS_SERVER = "stackyard-hosts"  # shared by host routes; not "sy-" so no stage can clash
HOSTS_FALLBACK = "stackyard-hosts-fallback"  # the host server's last route: by the host
HTTPS_SERVER = "stackyard-https"  # host routes with a certificate (tls: acme or internal)
HTTPS_FALLBACK = "stackyard-https-fallback"  # the HTTPS server's last route: by the host
# Each host server's first route: a Host that is not a DNS name is answered 404 at once.
HOSTS_NOT_A_NAME = "stackyard-hosts-not-a-name"
HTTPS_NOT_A_NAME = "stackyard-https-not-a-name"
ASK_NOT_A_NAME = "stackyard-ask-not-a-name"
# Helper servers on loopback, which the responder's answers name (helper -> server id).
NOT_SERVED_SERVER = "stackyard-not-served"
TO_HTTPS_SERVER = "stackyard-to-https"
APPROVED_SERVER = "stackyard-approved"
ASK_SERVER = "stackyard-ask"
# Serves a ``tls: internal`` name's bundle to Caddy's ``get_certificate`` (internal_ca.py).
CERTIFICATES_SERVER = "stackyard-certificates"
CERTIFICATES_ROUTE = "stackyard-certificates-bundle"
HELPER_SERVERS = {
    "not-served": NOT_SERVED_SERVER,
    "to-https": TO_HTTPS_SERVER,
    "approved": APPROVED_SERVER,
    "ask": ASK_SERVER,
    "certificates": CERTIFICATES_SERVER,
}
# The helpers Caddy calls itself; the responder's answers name the others.
CALLED_BY_CADDY = frozenset({"ask", "certificates"})
NOT_SERVED_BODY = "Stackyard: no stage is served on this host name\n"
# What a stage's URL answers when none of its tasks could (none serves: a stage scaled to
# zero, every task failing its health check, a dial refused): Caddy's own status, and
# words instead of an empty body. The app's own error answers pass through untouched.
NO_TASK_BODY = (
    "Stackyard: no task of this stage could answer ({http.error.status_code} "
    "{http.error.status_text}); it may be starting, scaled to zero or failing\n"
)
NO_TASK_ERRORS: Json = {
    "routes": [
        {
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": "{http.error.status_code}",
                    "body": NO_TASK_BODY,
                    "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
                }
            ]
        }
    ]
}
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
# Caddy keeps an SRV answer for REFRESH from when it got it; the second REFRESH is margin
# for the time between the responder sending an answer and Caddy taking it.
ANSWER_KEPT = 2 * 0.025
# A request that meets an upstream which just went away is tried on another one.
LOAD_BALANCING = {
    "selection_policy": {"policy": "round_robin"},
    "try_duration": "2s",
    "try_interval": "100ms",
}
# How long the handshake that has Caddy obtain a new name's certificate waits for it.
WARM_TIMEOUT = 120.0
# A warming handshake that no Caddy answered (reset, closed or refused: the listener it
# reached was closed by a reload) is made again, up to this many times in all, after
# WARM_PAUSE, then twice that.
WARM_TRIES = 3
WARM_PAUSE = 1.0
_IDEMPOTENT = frozenset({"GET", "PATCH", "DELETE"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)

Json = dict[str, Any]
log = logging.getLogger(__name__)


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
    return {"@id": proxy_id(name), **_proxy(srv_name(name), resolver)}


def _resolver_addresses(resolver: str) -> list[str]:
    """How a proxy's SRV lookup and transport name the upstream responder."""
    return [f"udp/{resolver}"]


def _proxy(lookup: str, resolver: str) -> Json:
    dns = {"addresses": _resolver_addresses(resolver)}
    return {
        "handler": "reverse_proxy",
        "dynamic_upstreams": {
            "source": "srv",
            "name": lookup,
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
        "errors": NO_TASK_ERRORS,
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


# Caddy's own log (its stderr: logs/caddy-N.log). Without an ``exclude`` it gets every
# entry of every logger, so each access line was encoded and written twice (measured:
# docs/benchmarks.md, "The cost of access logging and counting").
DEFAULT_LOG = "default"


def default_log() -> Json:
    """Caddy's default log as it was (stderr), minus the access loggers' lines, which are
    in their own files."""
    return {"exclude": ["http.log.access"]}


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


def by_host(resolver: str) -> Json:
    """The HTTP host server's last route: every request is proxied to the upstreams the
    responder gives for its host (``<host>.hosts.stackyard.internal.``): a plain name's
    route's tasks, the redirect server for a TLS name, else the not-served server. So a
    name is added or removed in the responder's table, and Caddy's config (a reload) does
    not change."""
    return {"@id": HOSTS_FALLBACK, "handle": [_proxy(HOST_SRV_NAME, resolver)]}


def by_tls_host(resolver: str) -> Json:
    """The HTTPS server's last route: a TLS name's route's tasks, else not-served."""
    return {"@id": HTTPS_FALLBACK, "handle": [_proxy(TLS_SRV_NAME, resolver)]}


# A host name the responder can be asked about: labels of letters, digits, ``_`` and ``-``
# (not at a label's ends), 63 characters at most, no empty label (so no trailing dot).
# Anything else (an IP v6 literal, ``a..b``, ``*``, an empty Host) makes the SRV lookup
# fail in Caddy before it is sent, and the proxy would retry it for its whole try_duration.
_LABEL = "[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
DNS_NAME = f"^{_LABEL}([.]{_LABEL})*$"
# The SRV name adds at most 26 characters (``.hosts.stackyard.internal.``) to the host,
# and a DNS name has at most 254.
MAX_HOST = 200


def not_a_name(route_id: str, host: str = "{http.request.host}") -> Json:
    """A host server's first route: a 404 at once for a Host that is not a DNS name (or a
    longer one than the lookup can take), which no stage can serve. ``host``: the
    placeholder of the name (the ask endpoint's is the query's ``domain``)."""
    return {
        "@id": route_id,
        "match": [{"expression": f"!{host}.matches('{DNS_NAME}') || size({host}) > {MAX_HOST}"}],
        "handle": [_static(404, NOT_SERVED_BODY)],
    }


def _proxies(entry: Any, lookup: str) -> bool:
    """Whether a host server's last route proxies by ``lookup`` (not a route of before)."""
    handlers = entry.get("handle") if isinstance(entry, dict) else None
    first = handlers[0] if isinstance(handlers, list) and handlers else {}
    upstreams = first.get("dynamic_upstreams") if isinstance(first, dict) else None
    return isinstance(upstreams, dict) and upstreams.get("name") == lookup


def _static(status: int, body: str = "", headers: dict[str, list[str]] | None = None) -> Json:
    answer: Json = {"handler": "static_response", "status_code": status}
    if body:
        answer["body"] = body
    if headers:
        answer["headers"] = headers
    return answer


# The certificates helper folds the name to lowercase (DNS names are case-insensitive;
# Caddy passes the SNI as the client sent it, the bundles are named in lowercase): Caddy
# 2.6's placeholders have no case function, so one replacement per capital letter.
FOLD_CASE = [{"find": letter, "replace": letter.lower()} for letter in string.ascii_uppercase]


def certificates_routes(bundles: Path, secret: str) -> list[Json]:
    """The certificates helper's routes: on the secret path, a ``tls: internal`` name's
    bundle (``<bundles>/<server_name in lowercase>.pem``) when the name is a DNS name and
    its file exists, else 204 (Caddy then goes on to on-demand ACME, which the ask
    endpoint refuses for internal names); any other path 404. The bundles hold private
    keys and anything on loopback can connect (tasks in host network mode too): the
    secret, which only the config carries (readable through the admin API's 0600 socket,
    and Caddy's 0600 autosave), is the fence; the name check, in the same matcher set as
    the path, keeps ``..`` and ``/`` out of the file path (the file is looked for only
    after the name is folded, so inside the checked route)."""
    name = "{http.request.uri.query.server_name}"
    path = f"/{secret}"
    root = str(bundles)
    bundle = [
        {
            "match": [{"file": {"root": root, "try_files": ["{http.request.uri.path}"]}}],
            "handle": [{"handler": "file_server", "root": root}],
        },
        {"handle": [_static(204)]},
    ]
    return [
        {
            "@id": CERTIFICATES_ROUTE,
            "match": [
                {
                    "path": [path],
                    "expression": f"{name}.matches('{DNS_NAME}') && size({name}) <= {MAX_HOST}",
                }
            ],
            "handle": [
                {"handler": "rewrite", "uri": f"/{name}.pem"},
                {"handler": "rewrite", "path_regexp": FOLD_CASE},
                {"handler": "subroute", "routes": bundle},
            ],
        },
        {"match": [{"path": [path]}], "handle": [_static(204)]},
        {"handle": [_static(404)]},
    ]


def _folds_case(entry: Any) -> bool:
    """Whether a config's certificates route folds the name (not a route of before)."""
    handlers = entry.get("handle") if isinstance(entry, dict) else None
    return isinstance(handlers, list) and any(
        isinstance(h, dict) and h.get("path_regexp") == FOLD_CASE for h in handlers
    )


def helper_servers(
    ports: dict[str, int],
    https_port: int,
    resolver: str,
    bundles: Path | None = None,
    secret: str = "",
) -> dict[str, Json]:
    """The loopback servers the responder's answers name besides tasks (server id ->
    config): a 404 for names no stage serves, a 308 to the HTTPS address for a TLS name
    asked over HTTP, a 200 that approves a name for on-demand TLS, and the ``ask``
    endpoint Caddy's on-demand TLS calls, which proxies by the name it asks about; with
    ``bundles`` and ``secret``, the certificates helper Caddy's ``get_certificate`` asks
    (``certificates_routes``)."""
    port = "" if https_port == 443 else f":{https_port}"
    location = {"Location": [f"https://{{http.request.host}}{port}{{http.request.uri}}"]}
    handlers = {
        NOT_SERVED_SERVER: _static(404, NOT_SERVED_BODY),
        TO_HTTPS_SERVER: _static(308, headers=location),
        APPROVED_SERVER: _static(200, "approved\n"),
        ASK_SERVER: _proxy(ASK_SRV_NAME, resolver),
    }
    # The ask endpoint refuses a name that cannot be looked up at once, as the host servers do.
    first = {ASK_SERVER: [not_a_name(ASK_NOT_A_NAME, "{http.request.uri.query.domain}")]}
    routes = {
        server: [*first.get(server, []), {"handle": [handler]}]
        for server, handler in handlers.items()
    }
    if bundles is not None and secret:
        routes[CERTIFICATES_SERVER] = certificates_routes(bundles, secret)
    return {
        server: {
            "listen": [f"127.0.0.1:{ports[helper]}"],
            "routes": routes[server],
            "automatic_https": {"disable": True},
        }
        for helper, server in HELPER_SERVERS.items()
        if ports.get(helper) and server in routes
    }


HOSTS_LOGS = {"default_logger_name": ACCESS_HOSTS}


def hosts_server(listen: str, resolver: str, first: Json | None = None) -> Json:
    """The HTTP server of every host name (``first``: a route of before, for tests)."""
    return {
        "listen": [listen],
        "routes": [not_a_name(HOSTS_NOT_A_NAME), *([first] if first else []), by_host(resolver)],
        "errors": NO_TASK_ERRORS,
        "automatic_https": {"disable": True},
        "logs": HOSTS_LOGS,
    }


def https_server(listen: str, resolver: str) -> Json:
    """TLS on every connection; certificates on demand (the tls app), so Caddy's automatic
    HTTPS (which would add servers and redirects of its own) stays off. No HTTP/3: its UDP
    listener has no SO_REUSEPORT, so a second Caddy could not bind."""
    return {
        "listen": [listen],
        "routes": [not_a_name(HTTPS_NOT_A_NAME), by_tls_host(resolver)],
        "errors": NO_TASK_ERRORS,
        "protocols": ["h1", "h2"],
        "tls_connection_policies": [{}],
        "automatic_https": {"disable": True},
        "logs": HOSTS_LOGS,
    }


def tls_app(acme_issuer: Json, ask: str, certificates: str = "") -> Json:
    """Caddy's tls app: one policy for every name, which names no subjects (so that
    every Caddy answers an ACME challenge for any name with the same issuer, and no name
    is ever a config change). A handshake's certificate comes from Caddy's cache, else
    from the ``certificates`` helper (a ``tls: internal`` name's bundle, minted by the
    router), else on demand from the ACME issuer for the names the ``ask`` endpoint
    approves (the responder's ``tls: acme`` names)."""
    policy: Json = {"issuers": [acme_issuer], "on_demand": True}
    if certificates:
        policy = {"get_certificate": [{"via": "http", "url": certificates}], **policy}
    return {"automation": {"policies": [policy], "on_demand": {"ask": ask}}}


def certificates_secret(config: Any) -> str:
    """The secret path of a config's certificates helper (its bundle route's path, else
    the URL its tls app calls), '' if none (a config of before the helper)."""
    for route in _server_routes(servers_of(config), CERTIFICATES_SERVER):
        matchers = route.get("match") if route.get("@id") == CERTIFICATES_ROUTE else None
        paths = matchers[0].get("path") if isinstance(matchers, list) and matchers else None
        if isinstance(paths, list) and paths and str(paths[0]).startswith("/"):
            return str(paths[0])[1:]
    for policy in _policies(config):
        for manager in policy.get("get_certificate") or []:
            url = str(manager.get("url", "")) if isinstance(manager, dict) else ""
            if url.startswith("http://127.0.0.1:"):
                return url.partition("//")[2].partition("/")[2]
    return ""


def _helper_ports(configs: Iterable[Any], taken: Iterable[int]) -> dict[str, int]:
    """The helper servers' ports: the ones a Caddy's config has already, else free ones
    that are none of ``taken`` (the data plane's HTTP and HTTPS ports: the HTTPS server
    listens only once a host route has TLS, so its port is free until then) and none
    another helper got."""
    ports: dict[str, int] = {}
    for config in configs:
        servers = servers_of(config)
        for helper, server in HELPER_SERVERS.items():
            found = servers.get(server)
            port = _port_of(found.get("listen")) if isinstance(found, dict) else None
            if port and helper not in ports:
                ports[helper] = port
    avoid = set(taken)
    for helper in HELPER_SERVERS:
        while helper not in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in avoid and port not in ports.values():
                ports[helper] = port
    return ports


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
    # The loopback ports of the helper servers (HELPER_SERVERS' keys); none: no helpers.
    helper_ports: dict[str, int] = field(default_factory=dict)
    # Where the ``tls: internal`` bundles are and the certificates helper's secret path.
    bundles: Path | None = None
    secret: str = field(default="", repr=False)

    def ask_url(self) -> str:
        return f"http://127.0.0.1:{self.helper_ports.get('ask', 0)}/"

    def certificates_url(self) -> str:
        port = self.helper_ports.get("certificates")
        if not port or self.bundles is None or not self.secret:
            return ""
        return f"http://127.0.0.1:{port}/{self.secret}"


def plan_ensure(
    config: Any,
    route: Route,
    resolver: str,
    *,
    listen_host: str,
    host_port: int,
    listeners: Listeners | None = None,
) -> list[AdminRequest]:
    """The admin requests that make ``config`` serve ``route``; none when it already does.

    A host route's names are in the responder's table (set before this plan runs), so
    its plan is empty once the host servers, the helper servers and the tls app exist:
    the first host route (or the first with TLS) creates them. Entries of a route from
    before names moved to the responder are removed, after the servers proxy by host; a
    tls app of before (a policy whose subjects were the ``tls: internal`` names) gets
    the one policy of now.
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
    helpers = helper_servers(at.helper_ports, at.https_port, resolver, at.bundles, at.secret)
    plan += _plan_helpers(servers, helpers)
    http_listen = f"{at.listen_host}:{at.host_port}"
    plan += _plan_last_route(servers, HOSTS_SERVER, hosts_server(http_listen, resolver))
    if route.tls != "off":
        plan += _plan_ports(config, at)
        https_listen = f"{at.listen_host}:{at.https_port}"
        plan += _plan_last_route(servers, HTTPS_SERVER, https_server(https_listen, resolver))
    if route.tls != "off" or _tls_app_of(config):
        plan += _plan_tls_app(config, at.acme.issuer(), at.ask_url(), at.certificates_url())
    return plan + _plan_remove_host_route(config, route.name)


def _plan_helpers(servers: Json, wanted: dict[str, Json]) -> list[AdminRequest]:
    """The helper servers, created once; their ports never change (the responder names
    them), the redirect's target may (another HTTPS port)."""
    plan = []
    for server, config in wanted.items():
        current = servers.get(server)
        if current is None:
            plan.append(AdminRequest("PUT", f"{SERVERS}/{server}", config))
        elif current.get("routes") != config["routes"]:
            plan.append(AdminRequest("PATCH", f"{SERVERS}/{server}/routes", config["routes"]))
    return plan


def _plan_last_route(servers: Json, server: str, wanted: Json) -> list[AdminRequest]:
    """A shared host server as ``wanted``: created if missing; else its listen address,
    logs, error routes, first route (the 404 for a Host that is not a name) and last route
    (the proxy by host) set, the routes between them left alone."""
    current = servers.get(server)
    if current is None:
        return [AdminRequest("PUT", f"{SERVERS}/{server}", wanted)]
    plan = []
    for key in ("listen", "logs", "errors"):  # a server made before errors existed gets them
        if current.get(key) != wanted[key]:
            method = "PATCH" if key in current else "PUT"
            plan.append(AdminRequest(method, f"{SERVERS}/{server}/{key}", wanted[key]))
    first, last = wanted["routes"][0], wanted["routes"][-1]
    routes = {r.get("@id"): r for r in _server_routes(servers, server)}
    if routes.get(first["@id"]) is None:
        plan.append(AdminRequest("PUT", f"{SERVERS}/{server}/routes/0", first))
    elif routes[first["@id"]] != first:
        plan.append(AdminRequest("PATCH", f"/id/{first['@id']}", first))
    if routes.get(last["@id"]) is None:
        plan.append(AdminRequest("POST", f"{SERVERS}/{server}/routes/...", [last]))
    elif routes[last["@id"]] != last:
        plan.append(AdminRequest("PATCH", f"/id/{last['@id']}", last))
    return plan


def _tls_app_of(config: Any) -> Any:
    apps = config.get("apps", {}) if isinstance(config, dict) else {}
    return apps.get("tls") if isinstance(apps, dict) else None


def _plan_tls_app(config: Any, issuer: Json, ask: str, certificates: str) -> list[AdminRequest]:
    """The tls app, and the pki app whose local CA signs the ``tls: internal`` names;
    nothing when the config already says so."""
    apps = config.get("apps", {}) if isinstance(config, dict) else {}
    current = _tls_app_of(config)
    app = tls_app(issuer, ask, certificates)
    plan = []
    if apps.get("pki") != PKI:
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


def plan_refresh(config: Any, resolver: str | None = None) -> list[AdminRequest]:
    """The admin requests that bring what every route shares in ``config`` to this
    version's shape and to this data plane, whichever route is ensured next; none when it
    has them. Now: Caddy's default log without the access lines, once the config has an
    access log (a config of before wrote each access line to Caddy's own log too); and
    with ``resolver``, every proxy asking the responder there (`_plan_resolvers`)."""
    plan = _plan_resolvers(config, resolver) if resolver else []
    logging = config.get("logging") if isinstance(config, dict) else None
    logs = logging.get("logs") if isinstance(logging, dict) else None
    if not isinstance(logs, dict) or not any(_is_access_log(log) for log in logs.values()):
        return plan
    return plan + _plan_logs(config, {DEFAULT_LOG: default_log()})


def _plan_resolvers(config: Any, resolver: str) -> list[AdminRequest]:
    """Each server whose proxies ask another responder than ``resolver``, re-pointed (one
    request per server). A Caddy resumes its saved config, which names the responder of
    the keeper that wrote it; a keeper started afresh (after ``down --all``, or with that
    port taken) answers on another port, and until then every such route answers 503."""
    wanted = _resolver_addresses(resolver)
    plan = []
    for name, server in sorted(servers_of(config).items()):
        pointed = _pointed_at(server, wanted)
        if pointed != server:
            plan.append(AdminRequest("PATCH", f"{SERVERS}/{name}", pointed))
    return plan


def _pointed_at(value: Any, addresses: list[str]) -> Any:
    """``value`` with every proxy's ``resolver`` (its upstream lookup's and its
    transport's) asking ``addresses``."""
    if isinstance(value, list):
        return [_pointed_at(item, addresses) for item in value]
    if not isinstance(value, dict):
        return value
    pointed = {key: _pointed_at(item, addresses) for key, item in value.items()}
    resolver = value.get("resolver")
    if isinstance(resolver, dict) and "addresses" in resolver:
        pointed["resolver"] = {**resolver, "addresses": addresses}
    return pointed


def _is_access_log(log: Any) -> bool:
    include = log.get("include") if isinstance(log, dict) else None
    return isinstance(include, list) and any(
        isinstance(one, str) and one.startswith("http.log.access.") for one in include
    )


def _wanted_logs(at: Listeners, access_logger_name: str, *, tls: bool) -> dict[str, Json]:
    """This Caddy's access log for a route's logger, its default log without the access
    lines, and its ACME log for a TLS route."""
    wanted: dict[str, Json] = {}
    if at.access_dir is not None:
        path = at.access_dir / f"{access_logger_name}.log"
        wanted[access_logger_name] = access_log(path, access_logger_name)
        wanted[DEFAULT_LOG] = default_log()
    if tls and at.acme_log is not None:
        wanted[ACME_LOG] = acme_log(at.acme_log)
    return wanted


def plan_remove(config: Any, name: str) -> list[AdminRequest]:
    """The admin requests that stop serving route ``name``, whichever kind it is (a host
    route's names leave the responder's table, its ``tls: internal`` bundles are deleted:
    no config change)."""
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
    """A host route's own entries, as versions before the by-host proxies wrote them: the
    redirect (or plain route) first, then the HTTPS route."""
    servers = servers_of(config)
    return [
        *_plan_remove_entry(servers, HOSTS_SERVER, host_route_id(name)),
        *_plan_remove_entry(servers, HTTPS_SERVER, tls_route_id(name)),
    ]


def _settled_at(change: NameChange) -> float:
    """When (time.monotonic()) no Caddy can still answer a changed name from an SRV answer
    it got before the change: Caddy 2.6 keeps one for its ``refresh`` and offers no way to
    ask what it keeps, so the router waits that out, only when a changed name was asked
    lately (the responder says when)."""
    if not change.changed or change.asked_ago is None:
        return 0.0
    return time.monotonic() + max(0.0, ANSWER_KEPT - change.asked_ago)


def _wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _handshake(address: str, port: int, name: str) -> bool:
    """One TLS handshake for ``name`` (SNI) at ``address:port``, its certificate not
    checked: it only has Caddy obtain the certificate, now rather than at a client's.
    False when no Caddy answered it: the connection was refused, reset or closed before
    a TLS answer (a handshake Caddy refused ends with a TLS alert, which is an answer)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=WARM_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=name),
        ):
            pass
    except (ConnectionError, ssl.SSLEOFError) as exc:
        log.warning("warming the certificate of %s: no answer (%s)", name, exc)
        return False
    except OSError as exc:  # the certificate's state (certificates()) says what went wrong
        log.warning("warming the certificate of %s: %s", name, exc)
    return True


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
    """Port routes are Caddy servers ``sy-<name>``; host routes are names in the
    responder's table, which the shared servers ``stackyard-hosts`` (HTTP) and
    ``stackyard-https`` look up by the request's host.

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
        self._warming: set[str] = set()  # names with a warming handshake under way
        self.warm_pause = WARM_PAUSE
        self._warm_lock = threading.Lock()

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
        ports: dict[str, int] = {}
        secret = ""
        storage: Path | None = None
        if route.host is not None:
            # A host name is served from the responder's table: set before Caddy is told.
            ports, secret, storage = self._host_setup()
            dials = {h: f"127.0.0.1:{p}" for h, p in ports.items() if h not in CALLED_BY_CADDY}
            self.directory.set_helpers(dials)
        settled = _settled_at(self._set_hosts(route, storage))
        resolver = self.directory.resolver()

        def ensure(admin: CaddyAdmin) -> None:
            plan = plan_ensure(
                admin.config(),
                route,
                resolver,
                listen_host=self.listen_host,
                host_port=self.host_port,
                listeners=self._listeners(admin, ports, storage, secret),
            )
            for change in plan:
                admin.send(change)

        self._on_each(ensure)
        storage = storage or (self._storage() if route.host is not None else None)
        if storage is not None:
            bundles = self._bundles(storage)
            if route.tls == "internal":
                bundles.renew(route.hosts)  # a local CA the plan has just made
            bundles.prune()
        _wait_until(settled)
        if route.tls == "acme":
            self.warm(route)

    def _storage(self) -> Path | None:
        """Caddy's storage root (shared by every Caddy), None when no Caddy says."""
        for admin in self.admins:
            try:
                return storage_root(admin.config())
            except StackyardError:
                continue
        return None

    def _host_setup(self) -> tuple[dict[str, int], str, Path | None]:
        """What a host route needs of the data plane, from one read of each Caddy's config:
        the helper servers' ports, the certificates helper's secret path that a config has
        (else a new one: a fresh data plane, or a config of before the helper), and Caddy's
        storage root (as the first Caddy that answers says)."""
        configs = []
        for admin in self.admins:
            try:
                configs.append(admin.config())
            except StackyardError:
                continue  # restarting: the other Caddy tells, or ensure_route fails anyway
        secret = next((s for s in map(certificates_secret, configs) if s), "")
        storage = storage_root(configs[0]) if configs else None
        taken = (self.host_port, self.https_port)
        return _helper_ports(configs, taken), secret or secrets.token_urlsafe(32), storage

    def _set_hosts(self, route: Route, storage: Path | None) -> NameChange:
        """The route's names into the responder's table; a ``tls: internal`` route's
        bundles minted first, under the bundles' lock held until the names are in the
        table: the first handshake finds them (unless the local CA is not made yet: then
        after the plan), and no other route's prune deletes them meanwhile."""
        if route.tls != "internal" or storage is None:
            return self.directory.set_hosts(route.name, route.hosts, route.tls)
        with self._bundles(storage).adding(route.hosts, quiet=True):
            return self.directory.set_hosts(route.name, route.hosts, route.tls)

    def _bundles(self, storage: Path) -> internal_ca.Bundles:
        return internal_ca.Bundles(storage, self._internal_names)

    def renew(self, route: Route) -> list[str]:
        """The route's ``tls: internal`` bundles minted again when due (Caddy renews
        what it obtained from an ACME CA itself)."""
        route.check()
        storage = self._storage() if route.tls == "internal" else None
        return self._bundles(storage).renew(route.hosts) if storage is not None else []

    def warm(self, route: Route, names: Sequence[str] = ()) -> None:
        """A TLS handshake for each name, in the background: Caddy obtains a name's
        certificate on demand, at its first handshake, and this is that one. A ``tls:
        internal`` name's bundle is minted instead (no handshake obtains it)."""
        if route.tls == "internal":
            self.renew(route)
            return
        address = "127.0.0.1" if self.hosts_listen in ("0.0.0.0", "") else self.hosts_listen
        for name in names or route.hosts:
            with self._warm_lock:
                if name in self._warming:
                    continue  # one handshake per name at a time
                self._warming.add(name)
            threading.Thread(
                target=self._warm_one, args=(address, name), daemon=True, name=f"warm {name}"
            ).start()

    def _warm_one(self, address: str, name: str) -> None:
        try:
            for attempt in range(WARM_TRIES):
                time.sleep(attempt * self.warm_pause)
                if attempt and not self._wants_certificate(name):
                    return  # removed meanwhile: nothing to warm
                if _handshake(address, self.https_port, name):
                    return
        finally:
            with self._warm_lock:
                self._warming.discard(name)

    def _wants_certificate(self, name: str) -> bool:
        """Whether the responder has ``name`` as a TLS name (False when it cannot say)."""
        try:
            return self.directory.names()[0].get(name.lower(), ("", "off"))[1] != "off"
        except (StackyardError, OSError) as exc:
            log.info("not warming %s again: %s", name, exc)
            return False

    def _internal_names(self) -> list[str]:
        """Every ``tls: internal`` name the responder has, of any route."""
        return sorted(h for h, (_, mode) in self.directory.names()[0].items() if mode == "internal")

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
        """None unless every Caddy serves the route; then the responder's upstreams. A host
        route is served when the responder names the route for its host name and every
        Caddy proxies by host (on HTTPS too, when the name has TLS). Its other names and
        its TLS mode are the caller's to compare (the controller keeps them)."""
        route.check()
        wanted = {proxy_id(route.name): ""}
        if route.host is not None:
            hosts, helpers = self.directory.names()
            named, mode = hosts.get(route.host.lower(), ("", "off"))
            if named != route.name or "not-served" not in helpers:
                return None
            wanted = {HOSTS_FALLBACK: HOST_SRV_NAME}
            if mode != "off":
                wanted[HTTPS_FALLBACK] = TLS_SRV_NAME
                # A Caddy without it has a tls app of before: ensure_route upgrades it.
                wanted[CERTIFICATES_ROUTE] = ""
        for admin in self.admins:
            for entry, lookup in wanted.items():
                found = admin.send(AdminRequest("GET", f"/id/{entry}"), missing_ok=True)
                if found.status_code == 404 or (lookup and not _proxies(found.json(), lookup)):
                    return None
                if entry == CERTIFICATES_ROUTE and not _folds_case(found.json()):
                    return None  # a helper of before: ensure_route upgrades it
        return self.directory.get(route.name) or []

    def refresh(self) -> None:
        """Bring every Caddy's shared config (not a route's) to this version's shape, and
        every route's upstream lookups to the responder that runs now: when the control
        plane starts or adopts a Caddy or a keeper, not only at a route's next
        ``ensure_route`` (which a route Caddy still has never gets)."""

        resolver = self.directory.resolver()

        def refresh(admin: CaddyAdmin) -> None:
            for change in plan_refresh(admin.config(), resolver):
                admin.send(change)

        self._on_each(refresh)

    def remove_route(self, route: Route) -> None:
        route.check()
        settled = _settled_at(self.directory.drop(route.name))  # its names: served no more
        storage = self._storage()
        if storage is not None:
            self._bundles(storage).prune()

        def remove(admin: CaddyAdmin) -> None:
            for change in plan_remove(admin.config(), route.name):
                admin.send(change, missing_ok=True)

        self._on_each(remove)
        _wait_until(settled)

    def _listeners(
        self, admin: CaddyAdmin, ports: dict[str, int], storage: Path | None, secret: str
    ) -> Listeners:
        return Listeners(
            helper_ports=ports,
            bundles=internal_ca.bundle_dir(storage) if storage is not None else None,
            secret=secret,
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
        names = {name for admin in self.admins for name in route_names(admin.config())}
        return sorted(names | {route for route, _ in self.directory.names()[0].values()})

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
