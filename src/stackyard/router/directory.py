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
from collections.abc import Sequence
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord

from stackyard.control_socket import Handler, Message, ask
from stackyard.errors import UsageError

log = logging.getLogger(__name__)

ZONE = "stackyard.internal."
CACHED_ANSWERS = 1024  # distinct queries kept; the table is small, garbage must not grow it


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


def write_table(path: Path, table: Table) -> None:
    """Replace ``path`` with ``table`` at once (a crash leaves the old or the new file)."""
    record = {"version": 1, "routes": {route: list(dials) for route, dials in table.items()}}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class UpstreamDirectory:
    """Route name → upstream dials, answered over DNS (SRV for routes, A for targets).

    ``port`` 0 picks a free one; the keeper passes the port Caddy's routes already name.
    With ``table_file``, the table starts from that file and every change is written to it
    before the change is acknowledged.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, table_file: Path | None = None
    ) -> None:
        self._table_file = table_file
        self._routes: Table = read_table(table_file) if table_file else {}
        self._lock = threading.Lock()
        # Packed answers by query (without its 2-byte id), dropped whenever the table
        # changes. Under traffic Caddy asks for every route's SRV each refresh and for an A
        # record on every new upstream connection: these are answered from here.
        self._answers: dict[bytes, bytes] = {}
        self._version = 0
        directory = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                answer = directory.answer(data)
                if answer is not None:
                    sock.sendto(answer, self.client_address)

        # One thread answers every query in turn: an answer is a dict lookup, and a thread
        # per query cost more than the answer itself.
        self._handler = Handler
        self._servers: list[socketserver.UDPServer] = []
        first = self._serve_on(host, port)
        self.address = f"{host}:{first.server_address[1]}"

    def _serve_on(self, host: str, port: int) -> socketserver.UDPServer:
        server = socketserver.UDPServer((host, port), self._handler)
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
        with self._lock:
            if self._routes.get(route) == tuple(dials):
                return False
            self._routes[route] = tuple(dials)
            self._changed()
        return True

    def get(self, route: str) -> list[str] | None:
        with self._lock:
            found = self._routes.get(route)
        return list(found) if found is not None else None

    def drop(self, route: str) -> bool:
        with self._lock:
            if self._routes.pop(route, None) is None:
                return False
            self._changed()
        return True

    def table(self) -> Table:
        with self._lock:
            return dict(self._routes)

    def _changed(self) -> None:
        """Under the lock: forget the cached answers, then persist the new table."""
        self._answers.clear()
        self._version += 1
        if self._table_file is not None:
            write_table(self._table_file, self._routes)

    def handlers(self) -> dict[str, Handler]:
        """The control operations on this table, for the keeper's control socket."""

        def set_route(request: Message) -> Message:
            dials = request.get("upstreams")
            if not isinstance(dials, list):
                raise UsageError("'upstreams' must be a list of 'ip:port' strings")
            return {"changed": self.set(_route_of(request), [str(d) for d in dials])}

        return {
            "resolver": lambda _request: {"address": self.address},
            "set": set_route,
            "get": lambda request: {"upstreams": self.get(_route_of(request))},
            "drop": lambda request: {"changed": self.drop(_route_of(request))},
            "table": lambda _request: {"routes": {r: list(d) for r, d in self.table().items()}},
        }

    def answer(self, data: bytes) -> bytes | None:
        """The DNS reply to one query packet (None for a packet that is not a query)."""
        if len(data) < 12:
            return None
        key = data[2:]
        with self._lock:
            cached, version = self._answers.get(key), self._version
        if cached is not None:
            return data[:2] + cached
        packed = self._compute(data)
        if packed is not None:
            with self._lock:
                if version == self._version and len(self._answers) < CACHED_ANSWERS:
                    self._answers[key] = packed[2:]
        return packed

    def _compute(self, data: bytes) -> bytes | None:
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types for garbage; a bad packet is dropped
            return None
        reply = query.reply()
        name = str(query.q.qname).lower()
        if query.q.qtype == QTYPE.SRV and name.endswith(f".routes.{ZONE}"):
            route = name.removesuffix(f".routes.{ZONE}")
            for dial in self.get(route) or []:
                host, port = split_dial(dial)
                reply.add_answer(
                    RR(name, QTYPE.SRV, ttl=0, rdata=SRV(10, 10, port, target_name(host)))
                )
        elif query.q.qtype in (QTYPE.A, QTYPE.AAAA) and _ip_of_target(name) is not None:
            if query.q.qtype == QTYPE.A:
                reply.add_answer(RR(name, QTYPE.A, ttl=0, rdata=A(_ip_of_target(name))))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack())


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

    def drop(self, route: str) -> None:
        self._ask({"op": "drop", "route": route})

    def table(self) -> Table:
        routes = self._ask({"op": "table"})["routes"]
        return {str(r): tuple(str(d) for d in dials) for r, dials in routes.items()}


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
