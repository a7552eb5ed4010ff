"""The router's DNS responder over real UDP on loopback: SRV for routes, A for targets;
its table persisted in a file, and changed over the keeper's control socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from stackyard.control_socket import ControlServer
from stackyard.errors import UsageError
from stackyard.router.directory import (
    ASK_SRV_NAME,
    HOST_SRV_NAME,
    TLS_SRV_NAME,
    DirectoryClient,
    NameChange,
    UpstreamDirectory,
    srv_name,
    target_name,
)


@pytest.fixture
def directory() -> Iterator[UpstreamDirectory]:
    found = UpstreamDirectory()
    try:
        yield found
    finally:
        found.close()


def ask(directory: UpstreamDirectory, name: str, qtype: str, ident: int = 7) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    query.header.id = ident
    host, port = directory.address.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(query.pack(), (host, int(port)))
        data, _ = sock.recvfrom(4096)
    return DNSRecord.parse(data)


def srv_targets(reply: DNSRecord) -> list[tuple[str, int]]:
    return [(str(rr.rdata.target), rr.rdata.port) for rr in reply.rr if rr.rtype == QTYPE.SRV]


def test_srv_answers_follow_every_change_of_the_table(directory: UpstreamDirectory) -> None:
    directory.set("hello-dev", ["127.0.0.1:20001"])
    first = ask(directory, srv_name("hello-dev"), "SRV")
    assert srv_targets(first) == [(target_name("127.0.0.1"), 20001)]
    assert srv_targets(ask(directory, srv_name("hello-dev"), "SRV")) == srv_targets(first)
    directory.set("hello-dev", ["127.0.0.1:20002", "127.0.0.1:20003"])
    assert [port for _, port in srv_targets(ask(directory, srv_name("hello-dev"), "SRV"))] == [
        20002,
        20003,
    ]
    directory.drop("hello-dev")
    assert srv_targets(ask(directory, srv_name("hello-dev"), "SRV")) == []


def test_each_reply_carries_its_own_query_id(directory: UpstreamDirectory) -> None:
    directory.set("hello-dev", ["127.0.0.1:20001"])
    assert ask(directory, srv_name("hello-dev"), "SRV", ident=11).header.id == 11
    assert ask(directory, srv_name("hello-dev"), "SRV", ident=12).header.id == 12


def test_a_target_name_resolves_to_its_address(directory: UpstreamDirectory) -> None:
    reply = ask(directory, target_name("127.0.0.1"), "A")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]


def test_unknown_names_are_nxdomain_and_garbage_is_dropped(
    directory: UpstreamDirectory,
) -> None:
    assert ask(directory, "example.com", "A").header.rcode == RCODE.NXDOMAIN
    assert directory.answer(b"\x00\x01garbage") is None
    assert directory.answer(b"") is None


def test_the_table_survives_a_restart_of_the_responder(tmp_path: Path) -> None:
    table = tmp_path / "upstreams.json"
    first = UpstreamDirectory(table_file=table)
    try:
        assert first.set("hello-dev", ["127.0.0.1:20001", "127.0.0.1:20002"]) is True
        assert first.set("hello-dev", ["127.0.0.1:20001", "127.0.0.1:20002"]) is False
        first.set("hello-prod", ["127.0.0.1:20003"])
        first.drop("hello-prod")
        port = int(first.address.rsplit(":", 1)[1])
    finally:
        first.close()
    second = UpstreamDirectory(port=port, table_file=table)
    try:
        assert second.address == first.address
        assert second.table() == {"hello-dev": ("127.0.0.1:20001", "127.0.0.1:20002")}
        reply = ask(second, srv_name("hello-dev"), "SRV")
        assert [p for _, p in srv_targets(reply)] == [20001, 20002]
    finally:
        second.close()


def test_an_unreadable_table_starts_empty(tmp_path: Path) -> None:
    table = tmp_path / "upstreams.json"
    table.write_text("{not json")
    directory = UpstreamDirectory(table_file=table)
    try:
        assert directory.table() == {}
    finally:
        directory.close()


def test_the_control_plane_changes_the_table_over_the_control_socket(tmp_path: Path) -> None:
    directory = UpstreamDirectory(table_file=tmp_path / "upstreams.json")
    server = ControlServer(tmp_path / "control.sock", directory.handlers())
    try:
        client = DirectoryClient(tmp_path / "control.sock")
        assert client.resolver() == directory.address
        assert client.get("hello-dev") is None
        client.set("hello-dev", ["127.0.0.1:20001"])
        assert client.get("hello-dev") == ["127.0.0.1:20001"]
        assert client.table() == {"hello-dev": ("127.0.0.1:20001",)}
        assert srv_targets(ask(directory, srv_name("hello-dev"), "SRV")) == [
            (target_name("127.0.0.1"), 20001)
        ]
        with pytest.raises(UsageError, match="not an IPv4 address"):
            client.set("hello-dev", ["example.com:80"])
        client.drop("hello-dev")
        assert client.get("hello-dev") is None
    finally:
        server.close()
        directory.close()


def in_zone(lookup: str, host: str) -> str:
    return lookup.replace("{http.request.host}", host).replace(
        "{http.request.uri.query.domain}", host
    )


HELPERS = {
    "not-served": "127.0.0.1:20097",
    "to-https": "127.0.0.1:20098",
    "approved": "127.0.0.1:20099",
}


def ports(directory: UpstreamDirectory, lookup: str, host: str) -> list[int]:
    return [port for _, port in srv_targets(ask(directory, in_zone(lookup, host), "SRV"))]


def test_a_host_name_is_answered_by_zone_mode_and_route(directory: UpstreamDirectory) -> None:
    """HTTP: a plain name's tasks, a TLS name's redirect; HTTPS: a TLS name's tasks; ask:
    a TLS name is approved; everything else: not served."""
    assert ask(directory, in_zone(HOST_SRV_NAME, "site.test"), "SRV").header.rcode == RCODE.NXDOMAIN
    directory.set("site-prod", ["127.0.0.1:20001"])
    directory.set_hosts("site-prod", ["site.test", "WWW.site.test"])
    directory.set("shop-prod", ["127.0.0.1:20002"])
    directory.set_hosts("shop-prod", ["shop.test"], "acme")
    directory.set_helpers(HELPERS)
    assert srv_targets(ask(directory, in_zone(HOST_SRV_NAME, "site.test"), "SRV")) == [
        (target_name("127.0.0.1"), 20001)
    ]
    assert ports(directory, HOST_SRV_NAME, "www.SITE.test") == [20001]
    assert ports(directory, TLS_SRV_NAME, "site.test") == [20097]  # plain: not over HTTPS
    assert ports(directory, ASK_SRV_NAME, "site.test") == [20097]  # and no certificate
    assert ports(directory, HOST_SRV_NAME, "shop.test") == [20098]  # to HTTPS
    assert ports(directory, TLS_SRV_NAME, "shop.test") == [20002]
    assert ports(directory, ASK_SRV_NAME, "shop.test") == [20099]  # approved
    for lookup in (HOST_SRV_NAME, TLS_SRV_NAME, ASK_SRV_NAME):
        assert ports(directory, lookup, "nobody.test") == [20097]
    # A name change is a table change: the cached answer goes with it.
    directory.set_hosts("site-prod", ["site.test"])
    assert ports(directory, HOST_SRV_NAME, "www.site.test") == [20097]
    with pytest.raises(UsageError, match=r"site\.test are served by another route"):
        directory.set_hosts("other-prod", ["site.test"])
    with pytest.raises(UsageError, match="is not one of acme, internal, off"):
        directory.set_hosts("other-prod", ["other.test"], "on")
    directory.drop("shop-prod")
    assert ports(directory, ASK_SRV_NAME, "shop.test") == [20097]
    # A tls: internal name is served over HTTPS, but never approved for an ACME CA: its
    # certificate is the router's (router/internal_ca.py).
    directory.set("intra-prod", ["127.0.0.1:20003"])
    directory.set_hosts("intra-prod", ["intra.test"], "internal")
    assert ports(directory, TLS_SRV_NAME, "intra.test") == [20003]
    assert ports(directory, ASK_SRV_NAME, "intra.test") == [20097]


def test_host_names_survive_a_restart_and_travel_over_the_control_socket(tmp_path: Path) -> None:
    table = tmp_path / "upstreams.json"
    directory = UpstreamDirectory(table_file=table)
    server = ControlServer(tmp_path / "control.sock", directory.handlers())
    try:
        client = DirectoryClient(tmp_path / "control.sock")
        client.set("site-prod", ["127.0.0.1:20001"])
        client.set_hosts("site-prod", ["site.test"], "internal")
        client.set_helpers(HELPERS)
        assert client.names() == ({"site.test": ("site-prod", "internal")}, HELPERS)
        with pytest.raises(UsageError, match="not an IPv4 address"):
            client.set_helpers({"not-served": "nowhere"})
        with pytest.raises(UsageError, match="'elsewhere' is not one of"):
            client.set_helpers({"elsewhere": "127.0.0.1:1"})
    finally:
        server.close()
        directory.close()
    again = UpstreamDirectory(table_file=table)
    try:
        assert again.names() == ({"site.test": ("site-prod", "internal")}, HELPERS)
        assert ports(again, TLS_SRV_NAME, "site.test") == [20001]
    finally:
        again.close()


def test_a_name_change_says_when_a_changed_name_was_last_answered(tmp_path: Path) -> None:
    """Caddy keeps an answer for a while: the router waits that out only after a change of
    a name answered lately. Only the names whose entry changed count; a name never asked
    counts from the responder's start (an earlier keeper may have answered it)."""
    started = time.monotonic()
    directory = UpstreamDirectory(table_file=tmp_path / "upstreams.json")
    server = ControlServer(tmp_path / "control.sock", directory.handlers())
    try:
        client = DirectoryClient(tmp_path / "control.sock")
        client.set("site-prod", ["127.0.0.1:20001"])
        client.set_helpers(HELPERS)
        assert client.set_hosts("site-prod", ["site.test"]).changed
        assert client.set_hosts("site-prod", ["site.test"]) == NameChange(False)
        time.sleep(0.05)  # spacing only: the start and the answers below are told apart
        asked = time.monotonic()
        assert ports(directory, HOST_SRV_NAME, "site.test") == [20001]
        again = time.monotonic()
        assert ports(directory, HOST_SRV_NAME, "site.test") == [20001]  # a cached answer
        added = client.set_hosts("site-prod", ["site.test", "www.site.test"])
        assert added.changed
        assert added.asked_ago is not None
        assert added.asked_ago >= asked - started  # www: from the start; site.test: same
        dropped = client.drop("site-prod")
        assert dropped.changed
        assert dropped.asked_ago is not None
        assert dropped.asked_ago <= time.monotonic() - again  # the cached answer counted
        client.set("port-only", ["127.0.0.1:20002"])
        assert client.drop("port-only") == NameChange(True, None)  # no name changed
        assert client.drop("port-only") == NameChange(False)
    finally:
        server.close()
        directory.close()
