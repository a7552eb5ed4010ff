"""The router's DNS responder over real UDP on loopback: SRV for routes, A for targets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from stackyard.router.directory import UpstreamDirectory, srv_name, target_name


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
