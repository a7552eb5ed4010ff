"""Host routes with TLS as plain data: the admin requests the caddy router decides on, the
routes it reads back, and a name's certificate state from Caddy's storage and logs."""

from __future__ import annotations

import json
import string
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
    ASK_SERVER,
    CERTIFICATES_SERVER,
    HELPER_SERVERS,
    HOSTS_FALLBACK,
    HOSTS_NOT_A_NAME,
    HOSTS_SERVER,
    HTTPS_FALLBACK,
    HTTPS_NOT_A_NAME,
    HTTPS_SERVER,
    SERVERS,
    TO_HTTPS_SERVER,
    AdminRequest,
    CaddyRouter,
    Listeners,
    by_host,
    by_tls_host,
    certificates_secret,
    not_a_name,
    plan_ensure,
    plan_refresh,
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
    helper_ports={
        "not-served": 20001,
        "to-https": 20002,
        "approved": 20003,
        "ask": 20004,
        "certificates": 20005,
    },
    bundles=Path("/run/caddy/storage/stackyard-internal"),
    secret="s3cret",
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
    plan = plan_ensure(config, route, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                       listeners=AT)  # fmt: skip
    return apply(config, plan)


def test_the_first_tls_route_creates_the_servers_and_later_names_change_no_config() -> None:
    first = plan_ensure({}, SHOP, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                        listeners=AT)  # fmt: skip
    assert [(c.method, c.path) for c in first] == [
        ("PUT", "/config/logging"),
        *[("PUT", f"{SERVERS}/{server}") for server in HELPER_SERVERS.values()],
        ("PUT", f"{SERVERS}/{HOSTS_SERVER}"),
        ("PUT", "/config/apps/http/http_port"),
        ("PUT", "/config/apps/http/https_port"),
        ("PUT", f"{SERVERS}/{HTTPS_SERVER}"),
        ("PUT", "/config/apps/pki"),
        ("PUT", "/config/apps/tls"),
    ]
    assert set(first[0].body["logs"]) == {"sy-access-hosts", "default", "stackyard-acme"}
    # Caddy's own log keeps its other lines, without the access lines (in their own files).
    assert first[0].body["logs"]["default"] == {"exclude": ["http.log.access"]}
    servers = {c.path.rpartition("/")[2]: c.body for c in first if c.path.startswith(SERVERS)}
    assert servers[HOSTS_SERVER]["routes"] == [not_a_name(HOSTS_NOT_A_NAME), by_host(RESOLVER)]
    assert servers[HTTPS_SERVER]["routes"] == [not_a_name(HTTPS_NOT_A_NAME), by_tls_host(RESOLVER)]
    assert servers[HTTPS_SERVER]["listen"] == ["127.0.0.1:8443"]
    redirect = servers[TO_HTTPS_SERVER]["routes"][0]["handle"][0]
    assert redirect["status_code"] == 308
    assert redirect["headers"]["Location"] == ["https://{http.request.host}:8443{http.request.uri}"]
    assert servers[ASK_SERVER]["listen"] == ["127.0.0.1:20004"]
    assert all("shop.test" not in json.dumps(body) for body in servers.values())
    tls = first[-1].body
    assert "certificates" not in tls  # nothing automated: certificates on demand
    assert tls["automation"]["on_demand"] == {"ask": "http://127.0.0.1:20004/"}
    assert tls["automation"]["policies"] == [
        {
            "get_certificate": [{"via": "http", "url": "http://127.0.0.1:20005/s3cret"}],
            "issuers": [AT.acme.issuer()],
            "on_demand": True,
        }
    ]
    certificates = servers[CERTIFICATES_SERVER]
    assert certificates["listen"] == ["127.0.0.1:20005"]
    bundle = certificates["routes"][0]
    assert bundle["match"][0]["path"] == ["/s3cret"]  # one matcher set: path AND name
    assert len(bundle["match"]) == 1
    assert set(bundle["match"][0]) == {"path", "expression"}
    # The name is folded to lowercase before its file is looked for, inside this route.
    rewrite, fold, files = bundle["handle"]
    assert rewrite["uri"] == "/{http.request.uri.query.server_name}.pem"
    assert {(r["find"], r["replace"]) for r in fold["path_regexp"]} == {
        (c, c.lower()) for c in string.ascii_uppercase
    }
    assert files["routes"][0]["match"][0]["file"]["root"] == "/run/caddy/storage/stackyard-internal"

    config = ensured({}, SHOP)
    more = Route("shop-prod", host="shop.test", aliases=("www.shop.test", "new.shop.test"),
                 tls="acme")  # fmt: skip
    blog = Route("blog-prod", host="blog.test", tls="acme")
    plain = Route("plain-prod", host="plain.test")
    for route in (SHOP, more, blog, plain):
        assert plan_ensure(config, route, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                           listeners=AT) == []  # fmt: skip
    assert plan_remove(config, "shop-prod") == []
    # The router reads the secret back (else it would make a new one, a config change per
    # name): from the helper's route, so also on a platform with plain-HTTP names only.
    assert certificates_secret(config) == "s3cret"
    assert certificates_secret(ensured({}, plain)) == "s3cret"
    assert "tls" not in ensured({}, plain)["apps"]  # type: ignore[operator]


def test_internal_names_change_no_config_and_a_policy_of_before_moves_to_the_one_policy() -> None:
    intra = Route("intra-prod", host="intra.test", tls="internal")
    config = ensured(ensured({}, SHOP), intra)
    policies = config["apps"]["tls"]["automation"]["policies"]  # type: ignore[index]
    assert len(policies) == 1
    assert "subjects" not in policies[0]
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False  # type: ignore[index]
    more = Route("intra-prod", host="intra.test", aliases=("more.test",), tls="internal")
    assert plan_ensure(config, more, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                       listeners=AT) == []  # fmt: skip
    assert plan_remove(config, "intra-prod") == []
    assert routes_in(config).routes == ()  # no name of any stage is in Caddy's config

    # The upgrade: a config whose internal names were a policy's subjects, without the
    # certificates helper, gets the helper and the one policy, once.
    before = json.loads(json.dumps(config))
    del before["apps"]["http"]["servers"][CERTIFICATES_SERVER]  # type: ignore[index]
    before["apps"]["tls"]["automation"]["policies"] = [  # type: ignore[index]
        {"subjects": ["intra.test"], "issuers": [{"module": "internal"}], "on_demand": True},
        {"issuers": [AT.acme.issuer()], "on_demand": True},
    ]
    upgrade = plan_ensure(before, intra, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                          listeners=AT)  # fmt: skip
    assert [(c.method, c.path) for c in upgrade] == [
        ("PUT", f"{SERVERS}/{CERTIFICATES_SERVER}"),
        ("PATCH", "/config/apps/tls"),
    ]
    assert apply(before, upgrade) == config
    assert plan_ensure(config, intra, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                       listeners=AT) == []  # fmt: skip

    # A certificates helper of before (its bundle route looked the name up as sent) gets
    # the route that folds the name, once.
    before = json.loads(json.dumps(config))
    helper = before["apps"]["http"]["servers"][CERTIFICATES_SERVER]  # type: ignore[index]
    helper["routes"][0]["handle"] = [{"handler": "file_server", "root": "/x"}]
    upgrade = plan_ensure(before, intra, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                          listeners=AT)  # fmt: skip
    assert [(c.method, c.path) for c in upgrade] == [
        ("PATCH", f"{SERVERS}/{CERTIFICATES_SERVER}/routes"),
    ]
    assert apply(before, upgrade) == config


def test_a_host_route_of_before_moves_to_the_proxies_by_host_then_its_entries_go() -> None:
    """A config written before names moved to the responder: per-route entries, a 404
    fallback, the names automated. The last routes proxy by host before the entries go."""
    legacy_redirect = {
        "@id": "sy-shop-prod-host",
        "match": [{"host": ["shop.test"]}],
        "handle": [{"handler": "static_response", "status_code": 308}],
    }
    legacy_tls = {
        "@id": "sy-shop-prod-tls",
        "match": [{"host": ["shop.test"]}],
        "handle": [{"handler": "reverse_proxy"}],
    }
    not_served = {"@id": "", "handle": [{"handler": "static_response", "status_code": 404}]}
    logs = {"default_logger_name": "sy-access-hosts"}
    config: dict[str, object] = {"apps": {
        "http": {"http_port": 8080, "https_port": 8443, "servers": {
            HOSTS_SERVER: {"listen": ["127.0.0.1:8080"], "logs": logs,
                           "routes": [legacy_redirect, {**not_served, "@id": HOSTS_FALLBACK}]},
            HTTPS_SERVER: {"listen": ["127.0.0.1:8443"], "logs": logs,
                           "routes": [legacy_tls, {**not_served, "@id": HTTPS_FALLBACK}]},
        }},
        "tls": {"certificates": {"automate": ["shop.test"]}, "automation": {"policies": []}},
    }}  # fmt: skip
    plan = plan_ensure(config, Route("shop-prod", host="shop.test", tls="acme"), RESOLVER,
                       listen_host="127.0.0.1", host_port=8080, listeners=AT)  # fmt: skip
    changes = [
        (c.method, c.path)
        for c in plan
        if not c.path.startswith(("/config/logging", f"{SERVERS}/stackyard-"))
    ]
    assert changes == [
        ("PATCH", f"/id/{HOSTS_FALLBACK}"),
        ("PATCH", f"/id/{HTTPS_FALLBACK}"),
        ("PUT", "/config/apps/pki"),
        ("PATCH", "/config/apps/tls"),
        ("DELETE", "/id/sy-shop-prod-host"),
        ("DELETE", "/id/sy-shop-prod-tls"),
    ]
    config = apply(config, plan)
    servers = config["apps"]["http"]["servers"]  # type: ignore[index]
    assert servers[HOSTS_SERVER]["routes"] == [not_a_name(HOSTS_NOT_A_NAME), by_host(RESOLVER)]
    assert servers[HTTPS_SERVER]["routes"] == [not_a_name(HTTPS_NOT_A_NAME), by_tls_host(RESOLVER)]


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


def test_an_error_of_let_s_encrypt_s_staging_ca_says_where_it_came_from() -> None:
    """After a failure Caddy retries against Let's Encrypt's staging CA: its errors name
    staging URLs (CertMagic appends the order and the CA), which the state explains."""
    staging = "https://acme-staging-v02.api.letsencrypt.org"
    error = (
        "[a.test] solving challenges: a.test: no solvers available for remaining challenges "
        f"(order={staging}/acme/order/123/456) (ca={staging}/directory)"
    )
    lines = [
        _line("acquiring lock", 1.0),
        _line("could not get certificate from issuer", 1.4, error=error),
    ]
    said = attempts("a.test", lines).error
    assert said.startswith(error)
    assert said.endswith("once it succeeds there, it asks the CA the platform is set to)")
    production = error.replace("acme-staging-v02", "acme-v02")
    lines[1] = _line("could not get certificate from issuer", 1.4, error=production)
    assert attempts("a.test", lines).error == production  # nothing added


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
        at = router._listeners(router.admins[0], {}, None, "")
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


def test_refresh_gives_an_old_config_the_default_log_without_access_lines() -> None:
    """A config of before: an access log, Caddy's default log absent (it then had every
    access line too). The refresh adds the exclusion, without any route being ensured;
    a config of now, or one with no access log yet, gets nothing."""
    access = {
        "writer": {"output": "file", "filename": "/x/sy-access-hosts.log"},
        "encoder": {"format": "json"},
        "include": ["http.log.access.sy-access-hosts"],
    }
    old = {"logging": {"logs": {"sy-access-hosts": access}}}
    assert [(c.method, c.path, c.body) for c in plan_refresh(old)] == [
        ("PUT", "/config/logging/logs/default", {"exclude": ["http.log.access"]})
    ]
    widened = {"logging": {"logs": {"sy-access-hosts": access, "default": {"level": "INFO"}}}}
    assert [(c.method, c.path) for c in plan_refresh(widened)] == [
        ("PATCH", "/config/logging/logs/default")
    ]
    now = {"logging": {"logs": {"sy-access-hosts": access,
                                "default": {"exclude": ["http.log.access"]}}}}  # fmt: skip
    assert plan_refresh(now) == []
    assert plan_refresh({}) == []
    assert plan_refresh({"logging": {"logs": {"default": {"level": "DEBUG"}}}}) == []


def test_refresh_points_every_proxy_at_the_responder_that_runs_now() -> None:
    """Caddy resumes the config it saved, which names the responder of the keeper of then;
    a keeper started afresh answers on another port. Every server with a proxy is
    re-pointed, port routes and the shared host and HTTPS servers alike; nothing else is
    touched, and a config pointed already gets nothing."""
    config = ensured(ensured({}, SHOP), Route("shop-dev", port=8081))
    moved = "127.0.0.1:5454"
    plan = plan_refresh(config, moved)
    proxies = {"sy-shop-dev", "stackyard-hosts", "stackyard-https", "stackyard-ask"}
    assert {(c.method, c.path.rpartition("/")[2]) for c in plan} == {
        ("PATCH", name) for name in proxies
    }
    pointed = apply(config, plan)
    resolvers = {
        str(address)
        for name in proxies
        for address in _values(pointed["apps"]["http"]["servers"][name], "addresses")  # type: ignore[index]
    }
    assert resolvers == {f"udp/{moved}"}
    assert plan_refresh(pointed, moved) == []
    assert plan_refresh(pointed) == []  # no responder known: only the shared config
    helpers = {n for n in pointed["apps"]["http"]["servers"] if n not in proxies}  # type: ignore[index]
    assert helpers  # the helper servers proxy nothing: untouched
    assert not helpers & {c.path.rpartition("/")[2] for c in plan}


def _values(value: object, key: str) -> list[object]:
    """Every item of every list under ``key`` anywhere in ``value``."""
    if isinstance(value, list):
        return [found for item in value for found in _values(item, key)]
    if not isinstance(value, dict):
        return []
    here = value.get(key)
    return [*(here if isinstance(here, list) else []),
            *(found for item in value.values() for found in _values(item, key))]  # fmt: skip


def test_servers_made_before_error_answers_existed_get_them_and_nothing_else() -> None:
    """A platform upgraded from a version whose servers had no ``errors``: the next plan
    adds them (a stage with no task then says so), and changes nothing else."""
    config = ensured(ensured({}, SHOP), Route("shop-dev", port=8081))
    servers = config["apps"]["http"]["servers"]  # type: ignore[index]
    for name in (HOSTS_SERVER, HTTPS_SERVER, "sy-shop-dev"):
        assert servers[name]["errors"]["routes"][0]["handle"][0]["status_code"] == (
            "{http.error.status_code}"
        )
        del servers[name]["errors"]
    plan = plan_ensure(config, SHOP, RESOLVER, listen_host="127.0.0.1", host_port=8080,
                       listeners=AT)  # fmt: skip
    assert [(c.method, c.path) for c in plan] == [
        ("PUT", f"{SERVERS}/{HOSTS_SERVER}/errors"),
        ("PUT", f"{SERVERS}/{HTTPS_SERVER}/errors"),
    ]
    port = plan_ensure(config, Route("shop-dev", port=8081), RESOLVER, listen_host="127.0.0.1",
                       host_port=8080, listeners=AT)  # fmt: skip
    assert [(c.method, c.path) for c in port] == [("PATCH", f"{SERVERS}/sy-shop-dev")]
    assert ensured(ensured(config, SHOP), Route("shop-dev", port=8081)) == ensured(
        ensured({}, SHOP), Route("shop-dev", port=8081)
    )
