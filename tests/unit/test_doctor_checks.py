"""Each of `stackyard doctor`'s checks judged from plain facts: what passes, what warns,
what fails, and the one-line fix it gives. No component is asked."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from stackyard.platform.doctor import (
    CERTIFICATE_WARN,
    DISK_FAIL,
    DISK_WARN,
    MEMORY_FAIL,
    MEMORY_WARN,
    Answer,
    CertificateFact,
    DoctorFacts,
    FileMode,
    Finding,
    Orphan,
    RegistryFact,
    RouteSource,
    TargetFact,
    Verdict,
    diagnose,
    failed,
)
from stackyard.platform.inspection import orphan_removal
from stackyard.router.base import Route
from stackyard.router.caddy import port_server
from stackyard.router.directory import UpstreamDirectory
from stackyard.router.upstream_probe import UpstreamSource, ask, dynamic_sources
from stackyard.settings import Settings

GB = 1_000_000_000
HEALTHY = DoctorFacts(
    data_dir="/d",
    user=1000,
    control_plane=Answer(True),
    engine=Answer(True),
    registry=Answer(True),
    router=Answer(True),
    sources=(RouteSource("shop-dev.routes.stackyard.internal.", "127.0.0.1:5353", 2),),
    disk_total=100 * GB,
    disk_free=50 * GB,
    memory_total=16 * GB,
    memory_available=8 * GB,
    files=(
        FileMode("/d", 0o700, 1000, True),
        FileMode("/d/secrets.key", 0o600, 1000, False),
    ),
    schema="0007",
    database_error="",
    known_schemas=("0001", "0007"),
    orphans=(),
)


def finding(facts: DoctorFacts, check: str) -> Finding:
    return next(f for f in diagnose(facts) if f.check == check)


def test_a_healthy_platform_passes_every_check() -> None:
    findings = diagnose(HEALTHY)
    assert [f.verdict for f in findings] == [Verdict.OK] * len(findings)
    assert not failed(findings)
    assert all(f.fix == "" for f in findings)


@pytest.mark.parametrize(
    ("component", "check", "fix"),
    [
        ("control_plane", "control plane", "stackyard up -d"),
        ("engine", "engine", "start the Docker engine"),
        ("registry", "registry", "/d/logs/registry.log"),
        ("router", "router", "/d/logs/caddy-*.log"),
    ],
)
def test_a_component_that_does_not_answer_fails_with_its_fix(
    component: str, check: str, fix: str
) -> None:
    broken = replace(HEALTHY, **{component: Answer(False, "does not answer at http://x")})
    found = finding(broken, check)
    assert found.verdict is Verdict.FAIL
    assert "does not answer at http://x" in found.summary
    assert fix in found.fix
    assert failed(diagnose(broken))


def test_a_silent_upstream_source_fails_and_an_empty_route_warns() -> None:
    silent = replace(HEALTHY, sources=(RouteSource("a.routes.x.", "127.0.0.1:9", None),))
    assert finding(silent, "upstream source").verdict is Verdict.FAIL
    assert "127.0.0.1:9" in finding(silent, "upstream source").summary
    empty = replace(HEALTHY, sources=(RouteSource("shop-dev.routes.x.", "127.0.0.1:9", 0),))
    assert finding(empty, "upstream source").verdict is Verdict.WARN
    assert "shop-dev" in finding(empty, "upstream source").summary
    unasked = replace(HEALTHY, router=Answer(False, "down"), sources=None)
    assert finding(unasked, "upstream source").verdict is Verdict.WARN


def test_routes_asking_another_port_than_the_keeper_s_say_to_restart_the_control_plane() -> None:
    """The keeper runs, on another port than the routes ask (Caddy resumed a config of an
    earlier keeper, and the control plane could not re-point it): starting the platform
    would change nothing; restarting the control plane re-points the routes."""
    source = RouteSource("a.routes.x.", "127.0.0.1:9", None)
    moved = finding(
        replace(HEALTHY, sources=(source,), responder="127.0.0.1:10"), "upstream source"
    )
    assert moved.verdict is Verdict.FAIL
    assert moved.fix == (
        "the keeper answers on 127.0.0.1:10: restart the control plane (stackyard down, then "
        "stackyard up -d), which points the routes there"
    )
    down = finding(replace(HEALTHY, sources=(source,), responder="127.0.0.1:9"), "upstream source")
    assert "start the platform (stackyard up -d)" in down.fix


def test_the_lookup_by_host_is_checked_but_not_counted_as_a_route() -> None:
    by_host = RouteSource("{http.request.host}.hosts.x.", "127.0.0.1:9", 0)
    shop = RouteSource("shop-dev.routes.x.", "127.0.0.1:9", 1)
    fine = finding(replace(HEALTHY, sources=(shop, by_host)), "upstream source")
    assert (fine.verdict, fine.summary) == (
        Verdict.OK,
        "1 route(s) and the host names get their upstreams",
    )
    silent = replace(HEALTHY, sources=(replace(by_host, upstreams=None),))
    assert finding(silent, "upstream source").verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("used", "verdict"),
    [(DISK_WARN - 0.01, Verdict.OK), (DISK_WARN, Verdict.WARN), (DISK_FAIL, Verdict.FAIL)],
)
def test_disk_use_warns_then_fails_and_points_at_prune(used: float, verdict: Verdict) -> None:
    facts = replace(HEALTHY, disk_free=round(100 * GB * (1 - used)))
    found = finding(facts, "disk")
    assert found.verdict is verdict
    assert ("stackyard prune" in found.fix) is (verdict is not Verdict.OK)


@pytest.mark.parametrize(
    ("available", "verdict"),
    [(MEMORY_WARN + 0.01, Verdict.OK), (MEMORY_WARN, Verdict.WARN), (MEMORY_FAIL, Verdict.FAIL)],
)
def test_memory_nearly_full_warns_then_fails(available: float, verdict: Verdict) -> None:
    facts = replace(HEALTHY, memory_available=round(16 * GB * available))
    assert finding(facts, "memory").verdict is verdict


def test_a_data_directory_others_can_enter_fails_with_the_chmod() -> None:
    facts = replace(HEALTHY, files=(FileMode("/d", 0o755, 1000, True),))
    found = finding(facts, "permissions")
    assert found.verdict is Verdict.FAIL
    assert found.fix == "chmod 700 /d"


def test_a_secret_file_others_can_read_fails_with_the_chmod() -> None:
    files = (HEALTHY.files[0], FileMode("/d/admin-token", 0o640, 1000, False))
    found = finding(replace(HEALTHY, files=files), "permissions")
    assert found.fix == "chmod 600 /d/admin-token"


def test_a_data_directory_of_another_user_fails() -> None:
    found = finding(replace(HEALTHY, user=0), "permissions")
    assert found.verdict is Verdict.FAIL
    assert found.fix.startswith("chown -R 0 /d")


def test_an_older_schema_warns_a_newer_fails_an_unreadable_database_fails() -> None:
    older = replace(HEALTHY, schema="0001")
    assert finding(older, "database").verdict is Verdict.WARN
    assert "stackyard up migrates it" in finding(older, "database").fix
    newer = replace(HEALTHY, schema="0042")
    assert finding(newer, "database").verdict is Verdict.FAIL
    broken = replace(HEALTHY, database_error="file is not a database")
    assert finding(broken, "database").verdict is Verdict.FAIL
    assert "stackyard restore" in finding(broken, "database").fix


def test_orphan_tasks_warn_with_the_command_that_removes_them() -> None:
    orphans = (Orphan("0123456789abcdef", "old-dev-1", "old"),)
    found = finding(replace(HEALTHY, orphans=orphans), "orphan tasks")
    assert found.verdict is Verdict.WARN
    assert found.fix == "docker rm -f 0123456789ab"
    on_swarm = replace(HEALTHY, orphans=orphans, orphan_removal="docker -H unix:///m service rm")
    assert finding(on_swarm, "orphan tasks").fix == "docker -H unix:///m service rm 0123456789ab"
    assert "old" in found.summary
    unasked = finding(replace(HEALTHY, orphans=None), "orphan tasks")
    assert unasked.verdict is Verdict.WARN


def test_a_target_whose_engine_or_registry_does_not_answer_fails_naming_it() -> None:
    """Before, doctor said nothing of targets: a region's engine down showed only when a
    deployment there failed."""
    eu = TargetFact("eu", "ok", "ok", nodes=3)
    us = TargetFact("us", "the Docker engine at tcp://10.0.0.5:2376 did not answer", "ok")
    assert finding(HEALTHY, "targets").summary == "no target besides local"
    fine = finding(replace(HEALTHY, targets=(eu,)), "targets")
    assert (fine.verdict, fine.summary) == (
        Verdict.OK,
        "every target's engine and registry answer: eu (3 nodes)",
    )
    broken = finding(replace(HEALTHY, targets=(eu, us)), "targets")
    assert broken.verdict is Verdict.FAIL
    assert broken.summary == (
        "1 of 2 target(s) cannot be used: us: the Docker engine at tcp://10.0.0.5:2376 did "
        "not answer"
    )
    assert broken.fix.endswith("stackyard targets check us")
    assert failed(diagnose(replace(HEALTHY, targets=(us,))))
    unasked = finding(replace(HEALTHY, targets=None), "targets")
    assert unasked.verdict is Verdict.WARN


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def cert(name: str, state: str, *, days: float | None = 60, error: str = "") -> CertificateFact:
    expires = None if days is None else NOW + timedelta(days=days)
    return CertificateFact("shop", "prod", name, state, expires, error)


def test_certificates_valid_or_being_obtained_pass() -> None:
    certificates = (cert("a.example.com", "valid"), cert("b.example.com", "pending", days=None))
    found = finding(replace(HEALTHY, certificates=certificates, now=NOW), "certificates")
    assert (found.verdict, found.summary) == (Verdict.OK, "1 valid, 1 being obtained")
    none = finding(replace(HEALTHY, certificates=(), now=NOW), "certificates")
    assert (none.verdict, none.summary) == (Verdict.OK, "no stage is served over HTTPS")


def test_a_failed_or_expired_certificate_fails_naming_the_name_its_stage_and_the_ca() -> None:
    error = "urn:ietf:params:acme:error:dns: no such host"
    certificates = (
        cert("a.example.com", "valid"),
        cert("b.example.com", "failed", days=None, error=error),
        cert("c.example.com", "expired", days=-1),
    )
    found = finding(replace(HEALTHY, certificates=certificates, now=NOW), "certificates")
    assert found.verdict is Verdict.FAIL
    assert found.summary == f"b.example.com (shop/prod) failed: {error} (and 1 more)"
    assert "stackyard domains shop" in found.fix
    expired = finding(replace(HEALTHY, certificates=certificates[2:], now=NOW), "certificates")
    assert (expired.verdict, expired.summary) == (Verdict.FAIL, "c.example.com (shop/prod) expired")


def test_the_public_apis_certificate_is_named_as_the_platforms() -> None:
    api = CertificateFact("", "", "stackyard.example.com", "failed", None, "no such host")
    found = finding(replace(HEALTHY, certificates=(api,), now=NOW), "certificates")
    assert found.verdict is Verdict.FAIL
    assert found.summary == "stackyard.example.com (the public API) failed: no such host"
    assert "up --public-api" in found.fix


def test_a_certificate_near_its_end_warns_it_was_not_renewed() -> None:
    days = CERTIFICATE_WARN.total_seconds() / 86400
    ending = (cert("a.example.com", "valid", days=days - 0.5),)
    found = finding(replace(HEALTHY, certificates=ending, now=NOW), "certificates")
    assert found.verdict is Verdict.WARN
    assert found.summary.startswith("a.example.com (shop/prod) expires 2026-12-11 00:00 UTC")
    fine = (cert("a.example.com", "valid", days=days + 0.5),)
    assert finding(replace(HEALTHY, certificates=fine, now=NOW), "certificates").verdict is (
        Verdict.OK
    )
    unasked = finding(replace(HEALTHY, certificates=None), "certificates")
    assert (unasked.verdict, unasked.summary) == (Verdict.WARN, "not checked: Caddy did not answer")


def test_upstream_sources_are_read_from_caddys_routes_and_asked_like_caddy() -> None:
    directory = UpstreamDirectory()
    try:
        directory.set("shop-dev", ["127.0.0.1:20001", "127.0.0.1:20002"])
        server = port_server(Route("shop-dev", port=31000), directory.address, "127.0.0.1")
        config = {"apps": {"http": {"servers": {"s": server}}}}
        [source] = dynamic_sources(config)
        assert source == UpstreamSource("shop-dev.routes.stackyard.internal.", directory.address)
        assert ask(source).upstreams == 2
    finally:
        directory.close()
    assert ask(source, timeout=0.2).upstreams is None  # nothing answers there any more


def test_the_orphan_removal_command_names_the_platforms_engine() -> None:
    assert orphan_removal(Settings()) == "docker rm -f"
    swarm = Settings(engine="swarm", engine_endpoint="unix:///run/stackyard-swarm/n1.sock")
    assert orphan_removal(swarm) == "docker -H unix:///run/stackyard-swarm/n1.sock service rm"


def test_an_outside_registry_that_refuses_its_credentials_fails_naming_the_fix() -> None:
    """A token rotated at the registry: doctor said all was well while every build of
    the stacks pushing there failed."""
    assert finding(HEALTHY, "registries").summary == "no outside registry"
    fine = finding(replace(HEALTHY, registries=(RegistryFact("ghcr"),)), "registries")
    assert (fine.verdict, fine.summary) == (
        Verdict.OK,
        "every outside registry takes its credentials: ghcr",
    )
    refused = RegistryFact("hub", "registry hub.example: refused the credentials (HTTP 401)")
    broken = finding(replace(HEALTHY, registries=(RegistryFact("ghcr"), refused)), "registries")
    assert broken.verdict is Verdict.FAIL
    assert broken.summary == (
        "1 of 2 outside registries refuse or do not answer: hub: registry hub.example: "
        "refused the credentials (HTTP 401)"
    )
    assert broken.fix.endswith("stackyard registries update hub --password-stdin")
    assert failed(diagnose(replace(HEALTHY, registries=(refused,))))
    assert finding(replace(HEALTHY, registries=None), "registries").verdict is Verdict.WARN
