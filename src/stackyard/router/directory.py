"""Upstreams served over DNS SRV, so that switching a stage's traffic reloads nothing.

Caddy 2.6 re-creates its listeners on every config change, and Linux resets the odd new
client connection still queued on the old socket. So Caddy's routes never change during
a deployment: each route looks its upstreams up as SRV records (refreshed every 25 ms)
from this small DNS responder on 127.0.0.1, and a switch is a change to this table.
"""

from __future__ import annotations

import ipaddress
import socketserver
import threading
from collections.abc import Sequence

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord

from stackyard.errors import UsageError

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


class UpstreamDirectory:
    """Route name → upstream dials, answered over DNS (SRV for routes, A for targets)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._routes: dict[str, tuple[str, ...]] = {}
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
        self._server = socketserver.UDPServer((host, 0), Handler)
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="upstream-dns", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set(self, route: str, dials: Sequence[str]) -> None:
        for dial in dials:
            split_dial(dial)
        with self._lock:
            self._routes[route] = tuple(dials)
            self._changed()

    def get(self, route: str) -> list[str] | None:
        with self._lock:
            found = self._routes.get(route)
        return list(found) if found is not None else None

    def drop(self, route: str) -> None:
        with self._lock:
            self._routes.pop(route, None)
            self._changed()

    def _changed(self) -> None:
        self._answers.clear()
        self._version += 1

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
