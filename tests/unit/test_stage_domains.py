"""A stage's host names and TLS mode, from stackyard.yml, the platform's base domain and
`stackyard domains add` (plain data; the API round trip is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from stackyard.config.models import StageConfig
from stackyard.deploy.domains import add_domain
from stackyard.deploy.keys import Domains, StageKey
from stackyard.deploy.observe import stage_settings
from stackyard.errors import UsageError
from stackyard.store.models import Stack, StageRoute
from tests.access_yard import access_yard

KEY = StageKey("hello", "prod")


def stage(**fields: object) -> StageConfig:
    return StageConfig.model_validate({"name": "prod", **fields})


def test_names_come_from_host_base_domain_domains_then_added() -> None:
    row = StageRoute(added_domains=["extra.example.com", "www.example.com"])
    settings = stage_settings(
        stage(host="hello.example.com", domains=["www.example.com"]),
        KEY,
        Domains("apps.example.com", "acme"),
        row,
    )
    assert settings.host == "hello.example.com"
    assert settings.aliases == (
        "prod.hello.apps.example.com",
        "www.example.com",
        "extra.example.com",
    )
    assert settings.tls == "acme"


def test_a_base_domain_names_every_stage_without_a_port() -> None:
    domains = Domains("apps.example.com", "acme")
    named = stage_settings(stage(), KEY, domains)
    assert (named.host, named.aliases, named.tls) == ("prod.hello.apps.example.com", (), "acme")
    on_port = stage_settings(stage(port=8081), KEY, domains)
    assert (on_port.host, on_port.port, on_port.tls) == (None, 8081, "off")


def test_a_stage_chooses_its_tls_and_without_names_has_none() -> None:
    chosen = stage_settings(stage(domains=["intra.test"], tls="internal"), KEY, Domains())
    assert (chosen.host, chosen.tls) == ("intra.test", "internal")
    assert stage_settings(stage(), KEY, Domains(None, "acme")).tls == "off"
    assert stage_settings(stage(host="a.test"), KEY, Domains()).tls == "off"


def test_port_with_domains_or_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="sets both port and host"):
        stage(port=8081, domains=["a.test"])
    with pytest.raises(ValueError, match="lists a host name twice"):
        stage(host="a.test", domains=["a.test"])


def test_an_ip_address_is_not_a_host_name() -> None:
    with pytest.raises(ValueError, match=r"'127\.0\.0\.1' is an IP address, not a host name"):
        stage(domains=["127.0.0.1"])
    assert stage(domains=["1.example.com", "app.42.example"]).domains == [
        "1.example.com",
        "app.42.example",
    ]


def test_a_name_another_stage_serves_is_refused_with_the_command_that_frees_it(
    tmp_path: Path,
) -> None:
    with access_yard(tmp_path) as yard, yard.sessions.begin() as session:
        hello, other = (
            session.scalar(select(Stack).where(Stack.name == n)) for n in ("hello", "other")
        )
        assert hello is not None
        assert other is not None
        session.add(StageRoute(stack_id=hello.id, stage="prod", host="hello.example.com",
                               aliases=[], tls="acme"))  # fmt: skip
        add_domain(session, hello, "prod", "www.example.com")
        with pytest.raises(UsageError) as taken:
            add_domain(session, other, "dev", "www.example.com")
        assert taken.value.message == "www.example.com is already served by stage prod of hello"
        assert taken.value.hint == (
            "remove it there first: stackyard domains remove hello --stage prod www.example.com"
        )
        with pytest.raises(UsageError) as configured:
            add_domain(session, other, "dev", "hello.example.com")
        assert "stackyard.yml" in str(configured.value.hint)
        with pytest.raises(UsageError, match="is an IP address"):
            add_domain(session, other, "dev", "10.0.0.1")


def test_tls_with_a_port_route_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="sets tls: acme with port: certificates are for host"):
        stage(port=8081, tls="acme")
    with pytest.raises(ValueError, match="sets tls: internal with port"):
        stage(port=8081, tls="internal")
    assert stage(port=8081, tls="off").tls == "off"
