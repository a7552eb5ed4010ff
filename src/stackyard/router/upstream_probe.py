"""Does the router's upstream source answer? For ``stackyard doctor``.

Caddy's routes take their upstreams from SRV records (``dynamic_upstreams`` with source
``srv``) on a resolver named in the route itself (router/caddy.py ``handler``). This
reads every such route from Caddy's running config and asks its resolver, as Caddy
would: a resolver that does not answer leaves the route without upstreams once Caddy's
last answer ages out. Routes with static upstreams have no source to ask.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dnslib import QTYPE, DNSRecord


@dataclass(frozen=True)
class UpstreamSource:
    """One route's upstream source: the SRV name it asks for, and where."""

    name: str  # e.g. shop-dev.routes.stackyard.internal.
    resolver: str  # host:port (UDP)


@dataclass(frozen=True)
class SourceAnswer:
    source: UpstreamSource
    upstreams: int | None  # SRV records in the answer; None when nothing answered


def dynamic_sources(config: Any) -> list[UpstreamSource]:
    """Every (SRV name, resolver) pair in a Caddy JSON config, once each."""
    found: dict[tuple[str, str], UpstreamSource] = {}
    for handler in _handlers(config):
        dynamic = handler.get("dynamic_upstreams")
        if not isinstance(dynamic, dict) or dynamic.get("source") != "srv":
            continue
        addresses = (dynamic.get("resolver") or {}).get("addresses") or []
        for address in addresses:
            resolver = str(address).removeprefix("udp/")
            source = UpstreamSource(str(dynamic.get("name", "")), resolver)
            found[(source.name, source.resolver)] = source
    return sorted(found.values(), key=lambda s: (s.name, s.resolver))


def _handlers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("handler") == "reverse_proxy":
            yield node
        for value in node.values():
            yield from _handlers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _handlers(item)


PROBE_LABEL = "stackyard-doctor-probe"  # in place of a placeholder: a name no stage has


def ask(source: UpstreamSource, *, timeout: float = 1.0) -> SourceAnswer:
    """Send the SRV query Caddy sends; count the records of the answer. A name with a
    placeholder (the host servers' lookup by the request's host) is asked for a name no
    stage serves: the answer is the not-served server's."""
    host, _, port = source.resolver.rpartition(":")
    name = re.sub(r"\{[^}]*\}", PROBE_LABEL, source.name)
    query = DNSRecord.question(name, "SRV")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query.pack(), (host, int(port)))
            data, _ = sock.recvfrom(65535)
        except (OSError, ValueError):
            return SourceAnswer(source, None)
    try:
        reply = DNSRecord.parse(data)
    except Exception:  # dnslib raises several types for garbage: not an answer
        return SourceAnswer(source, None)
    return SourceAnswer(source, sum(1 for rr in reply.rr if rr.rtype == QTYPE.SRV))
