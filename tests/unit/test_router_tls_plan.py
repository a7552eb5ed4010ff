"""Host routes with TLS as plain data: the admin requests the caddy router decides on, the
routes it reads back, and a name's certificate state from Caddy's storage and logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stackyard.errors import UsageError
from stackyard.router.base import Route
from stackyard.router.caddy import (
    HOSTS_SERVER,
    HTTPS_SERVER,
    SERVERS,
    AdminRequest,
    CaddyRouter,
    Listeners,
    plan_ensure,
    plan_remove,
    routes_in,
)
from stackyard.router.certificates import attempts, certificate_of

RESOLVER = "127.0.0.1:5353"
AT = Listeners(
    host_port=8080,
    https_port=8443,
    acme_log=Path("/run/caddy-1-acme.log"),
    access_dir=Path("/run/caddy-1-access"),
)
SHOP = Route("shop-prod", host="shop.test", aliases=("www.shop.test",), tls="acme")


def apply(config: dict[str, object], plan: list[AdminRequest]) -> dict[str, object]:
    """A tiny stand-in for Caddy's admin API: enough of PUT/PATCH/DELETE for these plans."""
    for change in plan:
        if change.path.startswith("/id/"):
            target = change.path.removeprefix("/id/")
            for server in config["apps"]["http"]["servers"].values():  # type: ignore[index]
                routes = server["routes"]
                hits = [i for i, r in enumerate(routes) if r.get("@id") == target]
                for i in hits:
                    if change.method == "DELETE":
                        del routes[i]
                    else:
                        routes[i] = change.body
            continue
        keys = change.path.removeprefix("/config/").split("/")
        node: dict[str, object] = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        if keys[-1] == "0" and isinstance(node, list):
            node.insert(0, change.body)
        elif change.method == "DELETE":
            del node[keys[-1]]
        else:
            node[keys[-1]] = json.loads(json.dumps(change.body))
    return config


def ensured(config: dict[str, object], route: Route) -> dict[str, object]:
    for automate in (False, True):
        plan = plan_ensure(
            config, route, RESOLVER, listen_host="127.0.0.1", host_port=8080,
            listeners=AT, automate=automate,
        )  # fmt: skip
        config = apply(config, plan)
    return config


def test_a_tls_route_is_routes_first_then_its_names_in_the_tls_app() -> None:
    first = plan_ensure({}, SHOP, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                        listeners=AT, automate=False)  # fmt: skip
    assert [(c.method, c.path) for c in first] == [
        ("PUT", "/config/logging"),
        ("PUT", "/config/apps/http/http_port"),
        ("PUT", "/config/apps/http/https_port"),
        ("PUT", f"{SERVERS}/{HTTPS_SERVER}"),
        ("PUT", f"{SERVERS}/{HOSTS_SERVER}"),
        ("PUT", "/config/apps/tls"),
    ]
    assert set(first[0].body["logs"]) == {"sy-access-hosts", "stackyard-acme"}
    tls = first[-1].body
    assert tls["certificates"]["automate"] == []  # not yet: every Caddy gets the route first
    assert tls["automation"]["policies"][-1]["issuers"][0]["module"] == "acme"
    redirect = first[4].body["routes"][0]
    assert redirect["handle"][0]["status_code"] == 308
    assert redirect["handle"][0]["headers"]["Location"] == [
        "https://{http.request.host}:8443{http.request.uri}"
    ]
    assert redirect["match"] == [{"host": ["shop.test", "www.shop.test"]}]

    config = ensured({}, SHOP)
    assert config["apps"]["tls"]["certificates"]["automate"] == ["shop.test", "www.shop.test"]  # type: ignore[index]
    again = plan_ensure(config, SHOP, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                        listeners=AT)  # fmt: skip
    assert again == []


def test_tls_routes_are_read_back_with_their_names_and_mode() -> None:
    intra = Route("intra-prod", host="intra.test", tls="internal")
    plain = Route("plain-prod", host="plain.test")
    config: dict[str, object] = {}
    for route in (SHOP, intra, plain):
        config = ensured(config, route)
    found = {route.name: route for route, _ in routes_in(config).routes}
    assert found == {"shop-prod": SHOP, "intra-prod": intra, "plain-prod": plain}
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False  # type: ignore[index]


def test_removing_a_tls_route_forgets_its_names_and_keeps_the_others() -> None:
    other = Route("blog-prod", host="blog.test", tls="acme")
    config = ensured(ensured({}, SHOP), other)
    config = apply(config, plan_remove(config, "shop-prod"))
    assert config["apps"]["tls"]["certificates"]["automate"] == ["blog.test"]  # type: ignore[index]
    assert [r for r, _ in routes_in(config).routes] == [other]


def test_tls_needs_a_host_name() -> None:
    with pytest.raises(UsageError, match="needs a host name"):
        Route("hello-dev", port=8081, tls="acme").check()
    with pytest.raises(UsageError, match="is not one of acme, internal, off"):
        Route("hello-dev", host="a.test", tls="on").check()  # type: ignore[arg-type]


def _line(msg: str, ts: float, **fields: str) -> str:
    return json.dumps({"level": "info", "ts": ts, "msg": msg, "identifier": "a.test", **fields})


def test_a_failed_challenge_is_the_reason_and_a_new_attempt_forgets_it() -> None:
    failed = [
        _line("acquiring lock", 1.0),
        _line("lock acquired", 1.1),
        _line("obtaining certificate", 1.2),
        _line("challenge failed", 1.3, challenge_type="tls-alpn-01",
              error="Failed to connect to 127.0.0.2:443 for the tls-alpn-01 challenge"),
        _line("could not get certificate from issuer", 1.4, error="[a.test] solving challenges"),
    ]  # fmt: skip
    seen = attempts("a.test", failed)
    assert (
        seen.error
        == "tls-alpn-01: Failed to connect to 127.0.0.2:443 for the tls-alpn-01 challenge"
    )
    assert seen.started is None
    again = attempts("a.test", [*failed, _line("acquiring lock", 2.0), _line("lock acquired", 2.1)])
    assert (again.error, again.obtaining) == ("", True)
    cancelled = _line("could not get certificate from issuer", 2.2, error="context canceled")
    assert attempts("a.test", [*failed[:3], cancelled]).error == ""
    assert attempts("b.test", failed).error == ""


def _store(storage: Path, name: str, expires: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(expires - timedelta(days=90))
        .not_valid_after(expires)
        .sign(key, hashes.SHA256())
    )
    path = storage / "certificates" / "ca.test-dir" / name / f"{name}.crt"
    path.parent.mkdir(parents=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_certificate_state_from_storage_and_logs(tmp_path: Path) -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    log = tmp_path / "caddy-1-acme.log"
    assert certificate_of("a.test", tmp_path, [log], now=now).state == "pending"

    log.write_text(_line("acquiring lock", now.timestamp() - 5) + "\n" + _line(
        "could not get certificate from issuer", now.timestamp() - 4, error="no such host"
    ) + "\n")  # fmt: skip
    failed = certificate_of("a.test", tmp_path, [log], now=now)
    assert (failed.state, failed.error) == ("failed", "no such host")
    assert "ports 80 and 443" in failed.hint

    expires = now + timedelta(days=60)
    _store(tmp_path, "a.test", expires)
    valid = certificate_of("a.test", tmp_path, [log], now=now)
    assert (valid.state, valid.issuer, valid.expires) == (
        "valid",
        "Test CA",
        expires.replace(microsecond=0),
    )
    assert valid.describe() == "valid (expires 2027-01-26 10:00 UTC)"
    later = certificate_of("a.test", tmp_path, [log], now=now + timedelta(days=61))
    assert later.state == "expired"


def test_host_name_routes_may_listen_on_a_public_address_while_port_routes_stay(
    tmp_path: Path,
) -> None:
    router = CaddyRouter([tmp_path / "caddy-1.sock"], tmp_path / "dataplane.sock",
                         hosts_listen="0.0.0.0")  # fmt: skip
    try:
        at = router._listeners(router.admins[0])
        assert (at.listen_host, router.listen_host) == ("0.0.0.0", "127.0.0.1")
        plan = plan_ensure({}, SHOP, RESOLVER, listen_host=router.listen_host, host_port=80,
                           listeners=at)  # fmt: skip
        https = next(c for c in plan if c.path.endswith(HTTPS_SERVER))
        assert https.body["listen"] == ["0.0.0.0:443"]
        dev = Route("hello-dev", port=8081)
        port_route = plan_ensure({}, dev, RESOLVER, listen_host=router.listen_host,
                                 host_port=80, listeners=at)  # fmt: skip
        assert port_route[-1].body["listen"] == ["127.0.0.1:8081"]
        assert port_route[-1].body["logs"] == {"default_logger_name": "sy-access-hello-dev"}
        access = port_route[0].body["logs"]["sy-access-hello-dev"]
        assert access["writer"]["filename"] == str(
            tmp_path / "caddy-1-access/sy-access-hello-dev.log"
        )
        assert access["include"] == ["http.log.access.sy-access-hello-dev"]
        assert at.acme_log == tmp_path / "caddy-1-acme.log"
    finally:
        router.close()
