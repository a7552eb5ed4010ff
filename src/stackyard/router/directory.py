"""Upstreams served over DNS SRV, so that switching a stage's traffic reloads nothing.

Caddy 2.6 re-creates its listeners on every config change, and Linux resets the odd new
client connection still queued on the old socket. So Caddy's routes never change during
a deployment: each route looks its upstreams up as SRV records (refreshed every 25 ms)
from this small DNS responder on 127.0.0.1, and a switch is a change to this table.

The responder runs in the data plane's keeper process (platform/keeper.py), which outlives
the control plane: the table is written to a file on every change, so a restarted keeper
serves the last upstreams the control plane gave it. The control plane changes the table
through the keeper's control socket (``DirectoryClient``; ``UpstreamDirectory.handlers``
on the keeper's side).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord

from stackyard.control_socket import Handler, Message, ask
from stackyard.errors import UsageError

log = logging.getLogger(__name__)

ZONE = "stackyard.internal."
CACHED_ANSWERS = 1024  # distinct queries kept; the table is small, garbage must not grow it
ASKED_NAMES = 4096  # host names whose last answer's time is kept (see NameChange)


# The host-name servers' proxies look up ``<host>.<zone>``, Caddy putting the request's
# host in: ``hosts`` for the HTTP server, ``tls`` for the HTTPS one, and ``ask`` for the
# on-demand TLS check (``<name>.ask``: approved or not).
HOSTS_ZONE = f"hosts.{ZONE}"
TLS_ZONE = f"tls.{ZONE}"
ASK_ZONE = f"ask.{ZONE}"
HOST_SRV_NAME = f"{{http.request.host}}.{HOSTS_ZONE}"
TLS_SRV_NAME = f"{{http.request.host}}.{TLS_ZONE}"
ASK_SRV_NAME = f"{{http.request.uri.query.domain}}.{ASK_ZONE}"
# The loopback servers the answers name besides tasks (their dials, set by the router).
HELPERS = ("not-served", "to-https", "approved")
Modes = dict[str, tuple[str, str]]  # host name -> (route, tls mode: off, acme or internal)


def srv_name(route: str) -> str:
    return f"{route}.routes.{ZONE}"


def target_name(ip: str) -> str:
    return f"{ip.replace('.', '-')}.ip.{ZONE}"


def _ip_of_target(name: str) -> str | None:
    suffix = f".ip.{ZONE}"
    if not name.endswith(suffix):
        return None
    candidate = name.removesuffix(suffix).replace("-", ".")
    try:
        return str(ipaddress.IPv4Address(candidate))
    except ValueError:
        return None


def split_dial(dial: str) -> tuple[str, int]:
    host, _, port = dial.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        raise UsageError(f"upstream '{dial}' is not an IPv4 address and port") from None
    return host, number


Table = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class NameChange:
    """What a change of host names did: whether the table changed, and how long ago
    (seconds) a name whose answer changed was last answered, None if it never was.

    Caddy keeps an answer for its ``refresh`` after it got it: the router waits out what
    is left of that, so that once it returns no Caddy answers from the old table.
    """

    changed: bool
    asked_ago: float | None = None


def read_names(path: Path) -> tuple[Modes, dict[str, str]]:
    """The host names (name -> route and mode) and the helpers' dials a keeper wrote last."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, {}  # read_table has said why
    hosts = record.get("hosts", {}) if isinstance(record, dict) else {}
    helpers = record.get("helpers", {}) if isinstance(record, dict) else {}
    names: Modes = {}
    for host, entry in hosts.items() if isinstance(hosts, dict) else []:
        if isinstance(entry, list) and len(entry) == 2:
            names[str(host).lower()] = (str(entry[0]), str(entry[1]))
    dials = {str(k): str(v) for k, v in helpers.items()} if isinstance(helpers, dict) else {}
    return names, dials


def read_table(path: Path) -> Table:
    """The table a keeper wrote last; empty when there is none (a fresh data directory)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # Written by rename, it cannot be half-written; a damaged disk is all that is left.
        # The control plane sets every route again when it starts.
        log.error("%s cannot be read (%s); starting with no upstreams", path, exc)
        return {}
    routes = record.get("routes", {}) if isinstance(record, dict) else {}
    table: Table = {}
    for route, dials in routes.items():
        try:
            for dial in dials:
                split_dial(str(dial))
        except (UsageError, TypeError) as exc:
            log.error("%s: route %s skipped: %s", path, route, exc)
            continue
        table[str(route)] = tuple(str(d) for d in dials)
    return table


def write_table(
    path: Path, table: Table, hosts: Modes | None = None, helpers: dict[str, str] | None = None
) -> None:
    """Replace ``path`` with ``table`` (and the host names) at once: a crash leaves the old
    or the new file."""
    record: dict[str, object] = {
        "version": 1,
        "routes": {route: list(dials) for route, dials in table.items()},
        "hosts": {host: list(entry) for host, entry in (hosts or {}).items()},
        "helpers": dict(helpers or {}),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class UpstreamDirectory:
    """Route name → upstream dials, answered over DNS (SRV for routes, A for targets).

    Host names, so that adding or removing one changes this table, not Caddy (a reload):
    ``<host>.hosts`` (asked by the HTTP server) answers a plain name's route's upstreams,
    a TLS name's redirect server, else the not-served server (404); ``<host>.tls`` (the
    HTTPS server) a TLS name's route's upstreams, else not-served; ``<name>.ask`` (Caddy's
    on-demand TLS check) the approving server for a ``tls: acme`` name, else not-served
    (a ``tls: internal`` name's certificate is the router's, never the ACME CA's).

    ``port`` 0 picks a free one; the keeper passes the port Caddy's routes already name.
    With ``table_file``, the table starts from that file and every change is written to it
    before the change is acknowledged.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        table_file: Path | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._table_file = table_file
        self._routes: Table = read_table(table_file) if table_file else {}
        self._hosts, self._helpers = read_names(table_file) if table_file else ({}, {})
        # Answers (computed and sent) and changes exclude each other: once a change is
        # made, no answer from the table before it leaves. Writing the file takes its own
        # lock, so a slow disk never holds the answers up.
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        # Host name -> when it was last answered (time.monotonic()), in any zone; names
        # not kept were last answered no later than ``_forgotten`` (this responder's start:
        # an earlier keeper may have answered them just before).
        self._asked: dict[str, float] = {}
        self._forgotten = time.monotonic()
        # Packed answers by query (without its 2-byte id), dropped whenever the table
        # changes. Under traffic Caddy asks for every route's SRV each refresh and for an A
        # record on every new upstream connection: these are answered from here.
        # Each with the host name it answers for ("" for none), whose time it records.
        self._answers: dict[bytes, tuple[bytes, str]] = {}
        directory = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                directory.answer(data, lambda answer: sock.sendto(answer, self.client_address))

        # One thread answers every query in turn: an answer is a dict lookup, and a thread
        # per query cost more than the answer itself.
        self._handler = Handler
        self._servers: list[socketserver.UDPServer] = []
        first = self._serve_on(host, port, sock)
        self.address = f"{host}:{first.server_address[1]}"

    def _serve_on(
        self, host: str, port: int, sock: socket.socket | None = None
    ) -> socketserver.UDPServer:
        """Answer on ``host:port``; on ``sock`` when given (a bound socket taken over from
        an earlier keeper: the queries queued on it are answered, none is lost)."""
        server = socketserver.UDPServer((host, port), self._handler, bind_and_activate=sock is None)
        if sock is not None:
            server.socket.close()
            server.socket = sock
            server.server_address = sock.getsockname()
        threading.Thread(target=server.serve_forever, name="upstream-dns", daemon=True).start()
        self._servers.append(server)
        return server

    def serve_also(self, address: str) -> bool:
        """Answer on ``address`` too (the responder of the version being upgraded from,
        once it lets its port go); False while the port is taken."""
        host, port = split_dial(address)
        try:
            self._serve_on(host, port)
        except OSError:
            return False
        return True

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def set(self, route: str, dials: Sequence[str]) -> bool:
        """Serve ``dials`` for ``route``; False when that is what it served already."""
        for dial in dials:
            split_dial(dial)
        with self._write_lock:
            with self._lock:
                if self._routes.get(route) == tuple(dials):
                    return False
                self._routes[route] = tuple(dials)
                self._changed()
            self._persist()
        return True

    def get(self, route: str) -> list[str] | None:
        with self._lock:
            found = self._routes.get(route)
        return list(found) if found is not None else None

    def drop(self, route: str) -> NameChange:
        """Serve ``route`` no more, nor its host names."""
        with self._write_lock:
            with self._lock:
                named = {h: e for h, e in self._hosts.items() if e[0] != route}
                if self._routes.pop(route, None) is None and named == self._hosts:
                    return NameChange(False)
                change = self._rename(named)
            self._persist()
        return change

    def set_hosts(self, route: str, hosts: Sequence[str], tls: str = "off") -> NameChange:
        """``route`` serves exactly ``hosts`` (lower-cased) with TLS mode ``tls``. A name
        another route serves is refused (the router checks that before)."""
        if tls not in ("off", "acme", "internal"):
            raise UsageError(f"tls mode '{tls}' is not one of acme, internal, off")
        wanted = {host.lower() for host in hosts}
        with self._write_lock:
            with self._lock:
                taken = sorted(h for h in wanted if self._hosts.get(h, (route,))[0] != route)
                if taken:
                    raise UsageError(f"host name(s) {', '.join(taken)} are served by another route")
                named = {h: e for h, e in self._hosts.items() if e[0] != route}
                named.update(dict.fromkeys(wanted, (route, tls)))
                if named == self._hosts:
                    return NameChange(False)
                change = self._rename(named)
            self._persist()
        return change

    def _rename(self, named: Modes) -> NameChange:
        """Under the lock: serve the host names ``named``; when was a name whose entry
        changed (added, removed or another route or mode) last answered."""
        moved = {h for h in named.keys() | self._hosts.keys() if named.get(h) != self._hosts.get(h)}
        self._hosts = named
        self._changed()
        return NameChange(True, self._asked_ago(moved))

    def _asked_ago(self, names: Iterable[str]) -> float | None:
        """Under the lock: seconds since any of ``names`` was last answered (None: no name)."""
        now = time.monotonic()
        times = [self._asked.get(name, self._forgotten) for name in names]
        last = max(times, default=float("-inf"))
        return now - last if last > float("-inf") else None

    def set_helpers(self, dials: dict[str, str]) -> bool:
        """The loopback servers' dials: ``not-served`` (404), ``to-https`` (308 to the
        HTTPS address) and ``approved`` (200, the on-demand TLS check's yes)."""
        for key, dial in dials.items():
            if key not in HELPERS:
                raise UsageError(f"'{key}' is not one of {', '.join(HELPERS)}")
            split_dial(dial)
        with self._write_lock:
            with self._lock:
                if self._helpers == dials:
                    return False
                self._helpers = dict(dials)
                self._changed()
            self._persist()
        return True

    def names(self) -> tuple[Modes, dict[str, str]]:
        """Host name -> (route, tls mode), and the helpers' dials."""
        with self._lock:
            return dict(self._hosts), dict(self._helpers)

    def table(self) -> Table:
        with self._lock:
            return dict(self._routes)

    def _changed(self) -> None:
        """Under the lock: forget the cached answers."""
        self._answers.clear()

    def _persist(self) -> None:
        """Under the write lock, after a change: write the table to its file, before the
        change is acknowledged. Answers go on meanwhile (from the new table)."""
        if self._table_file is None:
            return
        with self._lock:
            routes, hosts, helpers = dict(self._routes), dict(self._hosts), dict(self._helpers)
        write_table(self._table_file, routes, hosts, helpers)

    def handlers(self) -> dict[str, Handler]:
        """The control operations on this table, for the keeper's control socket."""

        def set_route(request: Message) -> Message:
            dials = request.get("upstreams")
            if not isinstance(dials, list):
                raise UsageError("'upstreams' must be a list of 'ip:port' strings")
            return {"changed": self.set(_route_of(request), [str(d) for d in dials])}

        def set_hosts(request: Message) -> Message:
            hosts = request.get("hosts")
            if not isinstance(hosts, list):
                raise UsageError("'hosts' must be a list of host names")
            names = [str(h) for h in hosts]
            return _change_message(self.set_hosts(_route_of(request), names, str(request["tls"])))

        def set_helpers(request: Message) -> Message:
            dials = request.get("dials")
            if not isinstance(dials, dict):
                raise UsageError("'dials' must map a helper to its 'ip:port'")
            return {"changed": self.set_helpers({str(k): str(v) for k, v in dials.items()})}

        def names(_request: Message) -> Message:
            hosts, helpers = self.names()
            return {"hosts": {h: list(e) for h, e in hosts.items()}, "helpers": helpers}

        return {
            "resolver": lambda _request: {"address": self.address},
            "hosts": set_hosts,
            "helpers": set_helpers,
            "names": names,
            "set": set_route,
            "get": lambda request: {"upstreams": self.get(_route_of(request))},
            "drop": lambda request: _change_message(self.drop(_route_of(request))),
            "table": lambda _request: {"routes": {r: list(d) for r, d in self.table().items()}},
        }

    def answer(self, data: bytes, send: Callable[[bytes], object] | None = None) -> bytes | None:
        """The DNS reply to one query packet (None for a packet that is not a query),
        given to ``send`` before any change of the table can come between."""
        if len(data) < 12:
            return None
        key = data[2:]
        with self._lock:
            cached = self._answers.get(key)
            if cached is None:
                computed = self._compute(data)
                if computed is None:
                    return None
                cached = computed[0][2:], computed[1]
                if len(self._answers) < CACHED_ANSWERS:
                    self._answers[key] = cached
            packed, host = data[:2] + cached[0], cached[1]
            if host:
                self._asked_now(host)
            if send is not None:
                send(packed)
        return packed

    def _compute(self, data: bytes) -> tuple[bytes, str] | None:
        """The reply to a query, and the host name it answers for (if any)."""
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types for garbage; a bad packet is dropped
            return None
        reply = query.reply()
        name = str(query.q.qname).lower()
        host = ""
        if query.q.qtype == QTYPE.SRV and name.endswith(f".routes.{ZONE}"):
            _add_srv(reply, name, self.get(name.removesuffix(f".routes.{ZONE}")) or [])
        elif query.q.qtype == QTYPE.SRV and _zone_of(name):
            zone = _zone_of(name)
            host = name.removesuffix(f".{zone}")
            dials = self._host_dials(host, zone)
            if dials is None:
                reply.header.rcode = RCODE.NXDOMAIN
            _add_srv(reply, name, dials or [])
        elif query.q.qtype in (QTYPE.A, QTYPE.AAAA) and _ip_of_target(name) is not None:
            if query.q.qtype == QTYPE.A:
                reply.add_answer(RR(name, QTYPE.A, ttl=0, rdata=A(_ip_of_target(name))))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack()), host

    def _host_dials(self, host: str, zone: str) -> list[str] | None:
        """Where a request for ``host`` goes, asked in ``zone`` (see the class)."""
        with self._lock:
            route, mode = self._hosts.get(host, ("", ""))
            if route and (zone == HOSTS_ZONE) == (mode == "off") and zone != ASK_ZONE:
                return list(self._routes.get(route, ()))
            helper = "not-served"
            if route and zone == HOSTS_ZONE:
                helper = "to-https"
            elif route and zone == ASK_ZONE and mode == "acme":
                helper = "approved"  # an internal name's bundle comes from the router
            dial = self._helpers.get(helper)
        return [dial] if dial else None

    def _asked_now(self, host: str) -> None:
        """Under the lock: ``host`` is answered now."""
        if host not in self._asked and len(self._asked) >= ASKED_NAMES:
            self._asked.clear()  # garbage names: forget them all, conservatively
            self._forgotten = time.monotonic()
        self._asked[host] = time.monotonic()


def _add_srv(reply: DNSRecord, name: str, dials: Sequence[str]) -> None:
    """One SRV answer per dial, its target the name of the dial's address."""
    for dial in dials:
        ip, port = split_dial(dial)
        reply.add_answer(RR(name, QTYPE.SRV, ttl=0, rdata=SRV(10, 10, port, target_name(ip))))


def _change_message(change: NameChange) -> Message:
    """A change of host names as the control socket answers it (``_name_change`` reads it)."""
    return {"changed": change.changed, "asked_ago": change.asked_ago}


def _zone_of(name: str) -> str:
    """The host-name zone ``name`` is in, or ``""``."""
    return next((z for z in (HOSTS_ZONE, TLS_ZONE, ASK_ZONE) if name.endswith(f".{z}")), "")


def _route_of(request: Message) -> str:
    route = request.get("route")
    if not isinstance(route, str) or not route:
        raise UsageError("'route' must name a route")
    return route


class DirectoryClient:
    """The control plane's side: change and read the keeper's table over its socket."""

    def __init__(self, socket_path: Path | str, *, timeout: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def _ask(self, request: Message) -> Message:
        return ask(self.socket_path, request, timeout=self.timeout)

    def resolver(self) -> str:
        """``127.0.0.1:<port>``: where Caddy's routes ask for their upstreams."""
        return str(self._ask({"op": "resolver"})["address"])

    def set(self, route: str, dials: Sequence[str]) -> None:
        for dial in dials:
            split_dial(dial)
        self._ask({"op": "set", "route": route, "upstreams": list(dials)})

    def get(self, route: str) -> list[str] | None:
        found = self._ask({"op": "get", "route": route})["upstreams"]
        return [str(d) for d in found] if found is not None else None

    def drop(self, route: str) -> NameChange:
        return _name_change(self._ask({"op": "drop", "route": route}))

    def set_hosts(self, route: str, hosts: Sequence[str], tls: str = "off") -> NameChange:
        request = {"op": "hosts", "route": route, "hosts": list(hosts), "tls": tls}
        return _name_change(self._ask(request))

    def set_helpers(self, dials: dict[str, str]) -> None:
        for dial in dials.values():
            split_dial(dial)
        self._ask({"op": "helpers", "dials": dials})

    def names(self) -> tuple[Modes, dict[str, str]]:
        found = self._ask({"op": "names"})
        hosts = {str(h): (str(e[0]), str(e[1])) for h, e in found["hosts"].items()}
        return hosts, {str(k): str(v) for k, v in found["helpers"].items()}

    def table(self) -> Table:
        routes = self._ask({"op": "table"})["routes"]
        return {str(r): tuple(str(d) for d in dials) for r, dials in routes.items()}


def _name_change(answer: Message) -> NameChange:
    # A keeper of before says no more than "changed": as if the names were asked just now.
    ago = answer.get("asked_ago", 0.0)
    return NameChange(bool(answer.get("changed")), float(ago) if ago is not None else None)


def lookup_srv(resolver: str, route: str, *, timeout: float = 5.0) -> list[str]:
    """Ask the responder at ``resolver`` for a route's upstreams, as Caddy does (SRV, then
    the targets' addresses from their names)."""
    host, port = split_dial(resolver)
    query = DNSRecord.question(srv_name(route), "SRV")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.pack(), (host, port))
        data, _ = sock.recvfrom(65535)
    reply = DNSRecord.parse(data)
    dials = []
    for record in reply.rr:
        if record.rtype == QTYPE.SRV:
            ip = _ip_of_target(str(record.rdata.target).lower())
            if ip is not None:
                dials.append(f"{ip}:{record.rdata.port}")
    return dials
