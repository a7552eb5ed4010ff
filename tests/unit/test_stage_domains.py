"""A stage's host names and TLS mode, from stackyard.yml, the platform's base domain and
`stackyard domains add` (plain data; the API round trip is in tests/integration)."""

from __future__ import annotations

import pytest

from stackyard.config.models import StageConfig
from stackyard.deploy.keys import Domains, StageKey
from stackyard.deploy.observe import stage_settings
from stackyard.store.models import StageRoute

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
