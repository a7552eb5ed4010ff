"""Host routes over HTTPS with certificates from a real ACME CA: the caddy Router against a
real data plane (two Caddies) and real Pebble with its DNS mock, all on loopback.

Pebble validates on the ports the router's HTTP and HTTPS servers listen on (free ports
here, 80 and 443 in production); its DNS mock answers 127.0.0.1 for every name.
"""

from __future__ import annotations

import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from stackyard.deploy.certwatch import CertificateWatch
from stackyard.deploy.trafficstore import TrafficCounter
from stackyard.notify.outbox import Outbox
from stackyard.platform.dataplane import stop_dataplane
from stackyard.router import internal_ca
from stackyard.router.base import Certificate, Route
from stackyard.router.caddy import (
    CERTIFICATES_ROUTE,
    CERTIFICATES_SERVER,
    HELPER_SERVERS,
    NOT_SERVED_BODY,
    AdminRequest,
    CaddyRouter,
    certificates_secret,
)
from stackyard.router.certificates import acme_log_path, storage_root
from stackyard.settings import Settings
from stackyard.store.models import StageRoute

from ..router_contract import free_port
from ..state_db import state_with_routes
from .backends import Backend
from .pebble import Pebble
from .test_router_caddy import start_dataplane
from .wrk import Load, WrkResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
UNANSWERED = "127.0.0.250"  # an address on loopback where nothing of the tests listens


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def pebble(tls_dir: Path) -> Iterator[Pebble]:
    running = Pebble(tls_dir / "pebble", http_port=free_port(), tls_port=free_port()).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def tls_dataplane(tls_dir: Path) -> Iterator[Settings]:
    settings = start_dataplane(tls_dir / "data")
    try:
        yield settings
    finally:
        stop_dataplane(settings)


def pebble_router(settings: Settings, pebble: Pebble) -> CaddyRouter:
    """A router of this data plane whose ACME CA is ``pebble``, validating on its ports."""
    return CaddyRouter(
        settings.caddy_admin_sockets,
        settings.dataplane_socket,
        host_port=pebble.http_port,
        https_port=pebble.tls_port,
        acme_ca=pebble.directory_url,
        acme_email="ops@example.com",
        acme_roots=[str(pebble.cert)],
        timeout=20.0,  # Caddy saves its config after each change: slow on a busy disk
    )


@pytest.fixture
def router(tls_dataplane: Settings, pebble: Pebble) -> Iterator[CaddyRouter]:
    caddy = pebble_router(tls_dataplane, pebble)
    try:
        yield caddy
    finally:
        for name in caddy.routes():
            caddy.remove_route(Route(name, port=1))
        caddy.close()


def https_get(port: int, name: str, roots: Path, path: str = "/") -> httpx.Response:
    """GET over HTTPS from 127.0.0.1:port, with ``name`` as SNI and Host, trusting only
    ``roots`` (and checking the certificate is for ``name``)."""
    return https_request(port, name, roots, path)


def https_request(
    port: int,
    name: str,
    roots: Path,
    path: str = "/",
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """``https_get``, with ``token`` as a bearer token and ``headers`` when given."""
    context = ssl.create_default_context(cafile=str(roots))
    headers = {"Host": name, **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(verify=context, timeout=10, trust_env=False) as client:
        return client.get(
            f"https://127.0.0.1:{port}{path}", headers=headers, extensions={"sni_hostname": name}
        )


def http_get(port: int, name: str, path: str = "/") -> httpx.Response:
    with httpx.Client(timeout=10, trust_env=False) as client:
        return client.get(f"http://127.0.0.1:{port}{path}", headers={"Host": name})


def acme_lines(socket: Path, names: Sequence[str]) -> str:
    """Every line of a Caddy's log of certificate attempts about ``names``, for a
    failure's message."""
    path = acme_log_path(socket)
    wanted = tuple(f'"identifier":"{name}"' for name in names)
    try:
        lines = [line for line in path.read_text().splitlines() if any(w in line for w in wanted)]
    except OSError as exc:
        return f"{path}: {exc}"
    return f"{path}:\n" + "\n".join(lines)


def why_pending(router: CaddyRouter, route: Route, pebble: Pebble | None) -> str:
    """What the logs say of ``route``'s names, the locks in Caddy's storage and the last of
    Pebble's log: enough to tell a stuck attempt from a slow one."""
    said = [acme_lines(admin.socket_path, route.hosts) for admin in router.admins]
    storage = storage_root(router.admins[0].config())
    locks = sorted(p.name for p in (storage / "locks").glob("*")) if storage else []
    log = pebble.directory / "pebble.log" if pebble else None
    tail = log.read_text(errors="replace").splitlines()[-30:] if log else []
    return "\n".join([*said, f"locks: {locks}", "pebble:", *tail])


# The platform's certificate watch warms the names still pending again every minute
# (deploy/certwatch.py: a warming handshake can be lost to a reset); here, more often.
REWARM_EVERY = 15.0


def settled(
    router: CaddyRouter, route: Route, within: float = 45.0, pebble: Pebble | None = None
) -> dict[str, Certificate]:
    """The route's certificates once none is pending (Pebble answers within seconds), the
    pending names warmed again as the certificate watch would; on a timeout, what the logs
    say (``pebble``'s too, when given)."""
    start = time.monotonic()
    deadline, rewarm = start + within, start + REWARM_EVERY
    while True:
        found = {cert.name: cert for cert in router.certificates(route)}
        pending = [name for name, cert in found.items() if cert.state == "pending"]
        if not pending:
            return found
        if time.monotonic() > deadline:
            pytest.fail(
                f"certificates still pending after {within} s: {found}\n"
                + why_pending(router, route, pebble)
            )
        if time.monotonic() > rewarm:
            router.warm(route, pending)
            rewarm = time.monotonic() + REWARM_EVERY
        time.sleep(0.25)


def test_a_stage_with_a_domain_gets_a_certificate_and_serves_https(
    router: CaddyRouter, pebble: Pebble, backend: Callable[[str], Backend]
) -> None:
    app = backend("hello-prod")
    route = Route("hello-prod", host="hello.test", tls="acme")
    assert [c.state for c in router.certificates(route)] == ["pending"]
    router.ensure_route(route, [app.dial])

    cert = settled(router, route)["hello.test"]
    assert cert.state == "valid", cert
    assert cert.issuer.startswith("Pebble Intermediate CA")
    assert cert.expires is not None
    assert cert.expires > datetime.now(UTC) + timedelta(days=1)
    assert cert.describe() == f"valid (expires {cert.expires:%Y-%m-%d %H:%M} UTC)"

    roots = pebble.roots()
    answer = https_get(pebble.tls_port, "hello.test", roots)
    assert (answer.status_code, answer.text) == (200, "hello-prod")
    # A Host that is not a DNS name over HTTPS: 404 at once (the HTTPS server's first route).
    odd = https_request(pebble.tls_port, "hello.test", roots, headers={"Host": "a..b"})
    assert (odd.status_code, odd.text) == (404, NOT_SERVED_BODY)
    redirect = http_get(pebble.http_port, "hello.test", "/some/path?q=1")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == f"https://hello.test:{pebble.tls_port}/some/path?q=1"
    assert router.url(route) == f"https://hello.test:{pebble.tls_port}"
    # Ensuring the same route again changes nothing: no admin write, no reload.
    assert router.upstreams(route) == [app.dial]


# Longer than the module's 90 s, so that ``settled`` can say why (Caddy's ACME log) first.
@pytest.mark.timeout(180)
def test_a_name_that_cannot_be_validated_fails_with_the_reason_while_the_others_serve(
    router: CaddyRouter, pebble: Pebble, backend: Callable[[str], Backend]
) -> None:
    # The DNS mock sends Pebble to UNANSWERED, where nothing answers its challenges. Not
    # 127.0.0.2-.5: the test swarm's daemons listen there (and their tasks, host mode).
    pebble.point("broken.test", UNANSWERED)
    app = backend("shop-prod")
    route = Route("shop-prod", host="shop.test", aliases=("broken.test",), tls="acme")
    router.ensure_route(route, [app.dial])

    # Caddy logs the failure once both challenge types failed: give a loaded machine time.
    certs = settled(router, route, within=120.0, pebble=pebble)
    assert certs["shop.test"].state == "valid"
    broken = certs["broken.test"]
    assert broken.state == "failed", broken
    assert UNANSWERED in broken.error
    assert broken.describe().startswith("failed: ")
    assert "DNS for broken.test points at this machine" in broken.hint
    assert "ports 80 and 443" in broken.hint
    answer = https_get(pebble.tls_port, "shop.test", pebble.roots())
    assert (answer.status_code, answer.text) == (200, "shop-prod")


def local_root(router: CaddyRouter) -> Path:
    """Caddy's local CA root (what a client of ``tls: internal`` names trusts)."""
    storage = storage_root(router.admins[0].config())
    assert storage is not None
    return storage / internal_ca.LOCAL_CA / "root.crt"


def served_serial(port: int, name: str) -> int:
    """The serial of the certificate the HTTPS port answers ``name`` (SNI) with."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def certificates_helper(router: CaddyRouter) -> tuple[int, str]:
    """The certificates helper's port and the secret path the config carries."""
    config = router.admins[0].config()
    listen = config["apps"]["http"]["servers"][CERTIFICATES_SERVER]["listen"][0]
    return int(listen.rpartition(":")[2]), certificates_secret(config)


def test_tls_internal_is_served_from_a_bundle_minted_from_caddys_local_ca(
    router: CaddyRouter, pebble: Pebble, backend: Callable[[str], Backend], tmp_path: Path
) -> None:
    """A ``tls: internal`` name's certificate is the router's, signed by Caddy's local CA:
    valid for a client that trusts that root at once (nothing to obtain), shown by
    ``certificates()``, renewed by ``renew`` when due (the next handshake serves the new
    one), and refused at once once the route is removed. A config of before (the internal
    names a policy's subjects) moves to the one policy at the next ensure_route."""
    app = backend("intra-prod")
    route = Route("intra-prod", host="intra.test", tls="internal")
    router.ensure_route(route, [app.dial])
    answer = https_get(pebble.tls_port, "intra.test", local_root(router))
    assert (answer.status_code, answer.text) == (200, "intra-prod")
    # DNS names are case-insensitive: an SNI (and Host) sent in capitals gets the same
    # bundle (the helper folds the name Caddy passes as sent).
    answer = https_get(pebble.tls_port, "INTRA.Test", local_root(router))
    assert (answer.status_code, answer.text) == (200, "intra-prod")
    cert = router.certificates(route)[0]
    assert cert.state == "valid", cert
    assert cert.issuer.startswith("Caddy Local Authority")
    assert cert.expires is not None
    assert cert.expires <= datetime.now(UTC) + internal_ca.LIFETIME
    # Not trusted by Pebble's roots: it is the local CA's certificate that answers.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        https_get(pebble.tls_port, "intra.test", pebble.roots())
    storage = storage_root(router.admins[0].config())
    assert storage is not None
    bundle = internal_ca.bundle_path(storage, "intra.test")
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600

    # Renewal: a bundle minted 11 hours ago is due; one look of the control plane's
    # certificate watch (its stage's route row in a state database) mints it again with
    # no handshake asking (nobody visits the name), and the very next handshake serves the
    # new certificate (Caddy keeps no copy of the helper's).
    old = internal_ca.mint(storage, "intra.test", internal_ca.local_signer(storage),
                           datetime.now(UTC) - timedelta(hours=11))  # fmt: skip
    assert served_serial(pebble.tls_port, "intra.test") == old.serial_number
    prod = StageRoute(stage="prod", host="intra.test", tls="internal")
    state = state_with_routes(tmp_path / "state.db", "intra", [prod])
    CertificateWatch(state.sessions, router, Outbox(wake=lambda: None)).check()
    state.database.dispose()
    assert router.renew(route) == []  # not due any more
    new = internal_ca.read_bundle(storage, "intra.test")
    assert new is not None
    assert new.serial_number != old.serial_number
    assert served_serial(pebble.tls_port, "intra.test") == new.serial_number

    # The upgrade from the tls app of before: subjects policy, no certificates helper.
    for admin in router.admins:
        tls = admin.config()["apps"]["tls"]
        acme = tls["automation"]["policies"][-1]["issuers"]
        tls["automation"]["policies"] = [
            {"subjects": ["intra.test"], "issuers": [{"module": "internal"}], "on_demand": True},
            {"issuers": acme, "on_demand": True},
        ]
        admin.send(AdminRequest("PATCH", "/config/apps/tls", tls))
        admin.send(AdminRequest("DELETE", f"/config/apps/http/servers/{CERTIFICATES_SERVER}"))
    assert router.upstreams(route) is None  # so the controller ensures the route again
    router.ensure_route(route, [app.dial])
    assert router.upstreams(route) == [app.dial]
    for admin in router.admins:
        policies = admin.config()["apps"]["tls"]["automation"]["policies"]
        assert [sorted(policy) for policy in policies] == [
            ["get_certificate", "issuers", "on_demand"]
        ]
    answer = https_get(pebble.tls_port, "intra.test", local_root(router))
    assert (answer.status_code, answer.text) == (200, "intra-prod")
    # A certificates helper of before (it did not fold the name) is upgraded the same way.
    for admin in router.admins:
        helper = admin.send(AdminRequest("GET", f"/id/{CERTIFICATES_ROUTE}")).json()
        helper["handle"] = [h for h in helper["handle"] if "path_regexp" not in h]
        admin.send(AdminRequest("PATCH", f"/id/{CERTIFICATES_ROUTE}", helper))
    with pytest.raises(httpx.ConnectError, match="internal error"):
        https_get(pebble.tls_port, "INTRA.Test", local_root(router))
    assert router.upstreams(route) is None
    router.ensure_route(route, [app.dial])
    assert router.upstreams(route) == [app.dial]
    answer = https_get(pebble.tls_port, "INTRA.Test", local_root(router))
    assert (answer.status_code, answer.text) == (200, "intra-prod")

    # Removed: the bundle goes, the next handshake is refused (no ACME order either).
    router.remove_route(route)
    assert not bundle.exists()
    with pytest.raises(ssl.SSLError, match="internal error"):
        served_serial(pebble.tls_port, "intra.test")


def test_the_certificates_helper_hands_no_key_without_the_secret_or_for_another_file(
    router: CaddyRouter, backend: Callable[[str], Backend]
) -> None:
    """The attack: a process on loopback (a task in host network mode) asks the helper
    for an internal name's private key. Without the config's secret path it gets 404; with
    it, a name that has no bundle, or a name that is a path to another file of Caddy's
    storage (the local CA's key), gets 204 and nothing."""
    router.ensure_route(Route("key-prod", host="key.test", tls="internal"),
                        [backend("key-prod").dial])  # fmt: skip
    port, secret = certificates_helper(router)
    assert len(secret) >= 40

    def ask(path: str, name: str) -> httpx.Response:
        with httpx.Client(timeout=10, trust_env=False) as client:
            return client.get(f"http://127.0.0.1:{port}{path}", params={"server_name": name})

    found = ask(f"/{secret}", "key.test")  # what Caddy asks: the bundle
    assert found.status_code == 200
    assert b"PRIVATE KEY" in found.content
    wrong_paths = ["/", "/key.test.pem", f"/{secret[:-1]}", f"/{secret}x", f"/x/{secret}",
                   f"/{secret}/", f"/{secret}/key.test.pem",
                   "/stackyard-internal/key.test.pem"]  # fmt: skip
    for path in wrong_paths:
        answer = ask(path, "key.test")
        assert answer.status_code == 404, path
        assert b"PRIVATE KEY" not in answer.content, path
    found = ask(f"/{secret}", "KEY.Test")  # DNS names are case-insensitive: the same bundle
    assert (found.status_code, found.content) == (200, ask(f"/{secret}", "key.test").content)
    guessed = ["nobody.test", "", "NOBODY.TEST", "key.test.", "..", "key.test.pem/..",
               "../pki/authorities/local/intermediate", "../stackyard-internal/key.test",
               "key.test/../key.test", "%2e%2e/pki/authorities/local/root"]  # fmt: skip
    for name in guessed:
        answer = ask(f"/{secret}", name)
        assert answer.status_code == 204, name
        assert answer.content == b"", name


def test_tls_off_keeps_plain_http_and_removing_a_route_forgets_its_names(
    router: CaddyRouter, pebble: Pebble, backend: Callable[[str], Backend]
) -> None:
    app = backend("plain-prod")
    route = Route("plain-prod", host="plain.test")
    router.ensure_route(route, [app.dial])
    answer = http_get(pebble.http_port, "plain.test")
    assert (answer.status_code, answer.text) == (200, "plain-prod")
    assert [c.state for c in router.certificates(route)] == ["none"]
    assert router.url(route) == f"http://plain.test:{pebble.http_port}"

    secure = Route("plain-prod", host="plain.test", tls="acme")
    router.ensure_route(secure, [app.dial])
    assert settled(router, secure)["plain.test"].state == "valid"
    assert http_get(pebble.http_port, "plain.test").status_code == 308

    router.remove_route(secure)
    assert http_get(pebble.http_port, "plain.test").status_code == 404
    for admin in router.admins:
        assert "plain.test" not in str(admin.config().get("apps", {}).get("tls", {}))


def test_the_access_log_records_each_request_of_a_known_batch(
    router: CaddyRouter,
    pebble: Pebble,
    backend: Callable[[str], Backend],
    tmp_path: Path,
    tls_dataplane: Settings,
) -> None:
    app = backend("logged-prod")
    route = Route("logged-prod", host="logged.test", tls="acme")
    router.ensure_route(route, [app.dial])
    assert settled(router, route)["logged.test"].state == "valid"
    port_app = backend("logged-dev")
    on_port = Route("logged-dev", port=free_port())
    router.ensure_route(on_port, [port_app.dial])
    roots = pebble.roots()
    statuses = [200, 200, 200, 404, 404, 500, 301]
    for n, status in enumerate(statuses):
        path = f"/status/{status}?n={n}"
        assert https_get(pebble.tls_port, "logged.test", roots, path).status_code == status
        with httpx.Client(timeout=10, trust_env=False) as client:
            assert client.get(f"http://127.0.0.1:{on_port.port}{path}").status_code == status
    http_get(pebble.http_port, "logged.test", "/redirected")  # a 308 on the HTTP server
    http_get(pebble.http_port, "nobody.test", "/")  # no stage's: not in any route's log

    deadline = time.monotonic() + 10
    while len(router.access_records(on_port)) < len(statuses) and time.monotonic() < deadline:
        time.sleep(0.1)
    for served in (route, on_port):
        records = router.access_records(served)
        got = [(r.method, r.uri, r.status) for r in records]
        expected = [("GET", f"/status/{s}?n={n}", s) for n, s in enumerate(statuses)]
        if served is route:
            expected.append(("GET", "/redirected", 308))
        assert got == expected
        assert all(r.client == "127.0.0.1" and r.duration >= 0 for r in records)
        assert [r.size for r in records][:1] == [len(served.name)]
    # Only there: Caddy's own log (its default logger, logs/caddy-N.log) has none of them.
    own_logs = sorted(tls_dataplane.logs_dir.glob("caddy-*.log"))
    assert own_logs
    for own in own_logs:
        assert "/status/200?n=0" not in own.read_text(errors="replace"), own

    # The traffic store counts the same batch from the real logs, per stage and status
    # class; a new counter on the same database (a restart) adds nothing; one more
    # request adds exactly one.
    state = state_with_routes(
        tmp_path / "state.db",
        "logged",
        [
            StageRoute(stage="prod", host="logged.test", tls="acme"),
            StageRoute(stage="dev", port=on_port.port),
        ],
    )
    sessions, stack_id = state.sessions, state.stack_id

    def counted() -> dict[str, tuple[int, ...]]:
        TrafficCounter(sessions, router, interval=0).count()
        reader = TrafficCounter(sessions, router, interval=0)
        found: dict[str, tuple[int, ...]] = {}
        for stage in ("prod", "dev"):
            rows = reader.minutes(stack_id, stage, 0)
            found[stage] = tuple(
                sum(getattr(m, field) for m in rows)
                for field in ("requests", "status_2xx", "status_3xx", "status_4xx", "errors")
            )
        return found

    assert counted() == {"prod": (8, 3, 2, 2, 1), "dev": (7, 3, 1, 2, 1)}
    assert counted() == {"prod": (8, 3, 2, 2, 1), "dev": (7, 3, 1, 2, 1)}
    with httpx.Client(timeout=10, trust_env=False) as client:
        assert client.get(f"http://127.0.0.1:{on_port.port}/status/404").status_code == 404
    deadline = time.monotonic() + 10
    while counted()["dev"][0] < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted() == {"prod": (8, 3, 2, 2, 1), "dev": (8, 3, 1, 3, 1)}
    state.database.dispose()


def none_failed(result: WrkResult) -> None:
    """A load that made requests and saw no failed one (else wrk's whole output: which
    kind of error, and when)."""
    assert result.requests > 100
    if result.errors:
        pytest.fail(f"wrk saw {result.errors} errors:\n{result.raw}", pytrace=False)


def test_names_added_and_removed_under_https_load_drop_nothing_and_get_certificates(
    router: CaddyRouter, pebble: Pebble, backend: Callable[[str], Backend], tmp_path: Path
) -> None:
    """wrk over HTTPS on a stage's name while the same stage gains and loses names, 9
    changes: no request fails and no Caddy's config changes; each new name gets its
    certificate on demand (the router's warming handshake) and serves HTTPS."""
    app = backend("steady-prod")
    steady = Route("steady-prod", host="steady.test", tls="acme")
    router.ensure_route(steady, [app.dial])
    assert settled(router, steady)["steady.test"].state == "valid"
    configs = [admin.config() for admin in router.admins]
    roots = pebble.roots()
    with Load(f"https://steady.test:{pebble.tls_port}/", 90, pin=tmp_path) as load:
        time.sleep(0.5)
        for n in range(3):
            added = Route("steady-prod", host="steady.test", aliases=(f"n{n}.test",), tls="acme")
            router.ensure_route(added, [app.dial])
            assert settled(router, added)[f"n{n}.test"].state == "valid"
            answer = https_get(pebble.tls_port, f"n{n}.test", roots)
            assert (answer.status_code, answer.text) == (200, "steady-prod")
            both = Route("steady-prod", host="steady.test", aliases=(f"n{n}.test", "m.test"),
                         tls="acme")  # fmt: skip
            router.ensure_route(both, [app.dial])
            router.ensure_route(steady, [app.dial])
        time.sleep(0.5)
        result = load.stop()
    none_failed(result)
    assert [admin.config() for admin in router.admins] == configs  # no reload
    assert http_get(pebble.http_port, "n0.test").status_code == 404  # removed: not served
    assert router.upstreams(steady) == [app.dial]
    # As the controller asks: the stage's route by its host, without aliases or mode.
    assert router.upstreams(Route("steady-prod", host="steady.test")) == [app.dial]


def test_internal_names_added_and_removed_under_https_load_drop_nothing(
    router: CaddyRouter, pebble: Pebble, backend: Callable[[str], Backend], tmp_path: Path
) -> None:
    """The same for ``tls: internal`` names (a stage of its own, on Caddy's local CA): 9
    changes under wrk on the stage's first name, no request fails and no Caddy's config
    changes; each added name's very first handshake is valid (its bundle is there before
    the name is served) and a removed one's is refused at once."""
    app = backend("inner-prod")
    steady = Route("inner-prod", host="inner.test", tls="internal")
    router.ensure_route(steady, [app.dial])
    roots = local_root(router)
    assert https_get(pebble.tls_port, "inner.test", roots).status_code == 200
    configs = [admin.config() for admin in router.admins]
    with Load(f"https://inner.test:{pebble.tls_port}/", 90, pin=tmp_path) as load:
        time.sleep(0.5)
        for n in range(3):
            added = Route("inner-prod", host="inner.test", aliases=(f"i{n}.test",),
                          tls="internal")  # fmt: skip
            router.ensure_route(added, [app.dial])
            answer = https_get(pebble.tls_port, f"i{n}.test", roots)
            assert (answer.status_code, answer.text) == (200, "inner-prod")
            both = Route("inner-prod", host="inner.test", aliases=(f"i{n}.test", "j.test"),
                         tls="internal")  # fmt: skip
            router.ensure_route(both, [app.dial])
            assert https_get(pebble.tls_port, "j.test", roots).status_code == 200
            router.ensure_route(steady, [app.dial])
            with pytest.raises(httpx.ConnectError, match="internal error"):
                https_get(pebble.tls_port, f"i{n}.test", roots)
        time.sleep(0.5)
        result = load.stop()
    none_failed(result)
    assert [admin.config() for admin in router.admins] == configs  # no reload
    assert [cert.state for cert in router.certificates(steady)] == ["valid"]


def test_a_certificate_for_a_name_nobody_added_is_never_asked_for(
    router: CaddyRouter, pebble: Pebble, backend: Callable[[str], Backend]
) -> None:
    """The attack: a client asks the HTTPS port for a name no stage serves (SNI), hoping
    Caddy obtains it a certificate. The ask endpoint refuses, the handshake fails, no
    certificate is stored; the ask endpoint listens on loopback only."""
    app = backend("real-prod")
    real = Route("real-prod", host="real.test", tls="acme")
    router.ensure_route(real, [app.dial])
    assert settled(router, real)["real.test"].state == "valid"
    with pytest.raises(httpx.ConnectError):
        https_get(pebble.tls_port, "intruder.test", pebble.roots())
    bare = Route("bare-prod", host="bare.test")  # served, but without TLS
    router.ensure_route(bare, [app.dial])
    with pytest.raises(httpx.ConnectError):
        https_get(pebble.tls_port, "bare.test", pebble.roots())
    ask = str(router.admins[0].config()["apps"]["tls"]["automation"]["on_demand"]["ask"])
    assert ask.startswith("http://127.0.0.1:")
    with httpx.Client(timeout=10, trust_env=False) as client:
        assert client.get(ask, params={"domain": "real.test"}).status_code == 200
        # A name that cannot be looked up: refused at once (it was a 503 after 2 s).
        assert client.get(ask, params={"domain": "a..b"}).status_code == 404
        for name in ("intruder.test", "bare.test", "real.test.evil", "", "a/../b"):
            assert client.get(ask, params={"domain": name}).status_code != 200, name
    for admin in router.admins:
        servers = admin.config()["apps"]["http"]["servers"]
        for server in HELPER_SERVERS.values():
            assert servers[server]["listen"][0].startswith("127.0.0.1:"), server
    time.sleep(1)  # what an obtain on demand would have written by now
    storage = storage_root(router.admins[0].config())
    assert list(storage.rglob("intruder.test*")) == []
    assert list(storage.rglob("bare.test*")) == []


def test_caddy_renews_a_certificate_and_certificates_shows_the_new_expiry(
    tmp_path: Path, backend: Callable[[str], Backend]
) -> None:
    """Renewal is Caddy's: with a Pebble whose certificates last 30 s, Caddy renews one
    at a handshake once a third of its life is left (certmagic's renewal window), and
    ``certificates()`` (what `stackyard domains` and doctor show) reads the later expiry
    from the storage. Its own Pebble and data plane: the module's certificates stay."""
    short = Pebble(tmp_path / "pebble", http_port=free_port(), tls_port=free_port(),
                   validity=30).start()  # fmt: skip
    settings = start_dataplane(tmp_path / "data")
    renewing = pebble_router(settings, short)
    try:
        route = Route("fresh-prod", host="fresh.test", tls="acme")
        renewing.ensure_route(route, [backend("fresh-prod").dial])
        first = settled(renewing, route)["fresh.test"]
        assert first.state == "valid", first
        assert first.expires is not None
        assert first.expires < datetime.now(UTC) + timedelta(seconds=31)
        roots = short.roots()
        deadline = time.monotonic() + 60
        found = first
        while found.expires == first.expires and time.monotonic() < deadline:
            # A visitor: Caddy checks an on-demand certificate's age at each handshake.
            assert https_get(short.tls_port, "fresh.test", roots).status_code == 200
            time.sleep(1)
            found = renewing.certificates(route)[0]
        assert found.state == "valid", found
        assert found.expires is not None
        assert found.expires > first.expires, (first, found)
        answer = https_get(short.tls_port, "fresh.test", roots)
        assert (answer.status_code, answer.text) == (200, "fresh-prod")
    finally:
        renewing.close()
        stop_dataplane(settings)
        short.stop()
