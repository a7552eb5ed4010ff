"""The plugin registry: typed lookups by seam, and adapters made with the settings offered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stackyard import plugins
from stackyard.engines.base import Engine
from stackyard.errors import UsageError
from stackyard.images.registry import RegistryClient
from stackyard.images.registry_base import Registry
from stackyard.router.base import Router
from stackyard.router.caddy import CaddyRouter
from stackyard.settings import Settings
from stackyard.source.base import Source
from stackyard.source.git import GitSource

SEAMS: dict[str, type] = {
    "engine": Engine,
    "router": Router,
    "source": Source,
    "registry": Registry,
}
LOOKUPS = {
    "engine": plugins.engine,
    "router": plugins.router,
    "source": plugins.source,
    "registry": plugins.registry,
}


@pytest.mark.parametrize("kind", sorted(SEAMS))
def test_every_registered_adapter_is_a_class_of_its_seam(kind: str) -> None:
    names = plugins.available(kind)
    assert "fake" in names
    for name in names:
        found = LOOKUPS[kind](name)
        assert issubclass(found, SEAMS[kind])
        assert found.name == name


def test_an_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(UsageError) as caught:
        plugins.registry("ecr")
    assert str(caught.value) == "no registry named 'ecr' (available: fake, oci)"


def test_an_entry_point_of_the_wrong_seam_is_refused() -> None:
    with pytest.raises(UsageError, match="not a subclass of Engine") as caught:
        plugins._seam_class("registry", "oci", Engine)
    assert "entry point group stackyard.registries" in str(caught.value)


@pytest.mark.parametrize("kind", sorted(SEAMS))
def test_every_registered_adapter_can_be_made_from_the_platforms_offers(
    kind: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, registry_port=2)
    offered = plugins.offers(settings, username="stackyard", password="secret")[kind]
    for name in plugins.available(kind):
        adapter: Any = plugins.create(LOOKUPS[kind](name), offered)
        assert adapter.name == name
        if hasattr(adapter, "close"):  # a Source holds nothing to release
            adapter.close()


def test_built_ins_get_the_settings_they_name(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, registry_port=5999)
    offers = plugins.offers(settings, username="stackyard", password="secret")
    source = plugins.create(plugins.source("git"), offers["source"])
    assert isinstance(source, GitSource)
    assert source.cache_dir == tmp_path / "git"
    with plugins.create(plugins.registry("oci"), offers["registry"]) as registry:
        assert isinstance(registry, RegistryClient)
        assert registry.endpoint == "127.0.0.1:5999"
    with plugins.create(plugins.router("caddy"), offers["router"]) as router:
        assert isinstance(router, CaddyRouter)
        assert [admin.socket_path for admin in router.admins] == settings.caddy_admin_sockets
        assert router.directory.socket_path == settings.dataplane_socket


class Needs:
    name = "needy"

    def __init__(self, endpoint: str, *, region: str, zone: str = "a") -> None:
        self.settings = (endpoint, region, zone)


class TakesAll:
    def __init__(self, **settings: object) -> None:
        self.settings = settings


def test_create_passes_only_the_settings_the_constructor_names() -> None:
    made = plugins.create(Needs, {"endpoint": "e", "region": "r", "password": "p"})
    assert made.settings == ("e", "r", "a")


def test_create_passes_everything_to_a_constructor_that_takes_all() -> None:
    assert plugins.create(TakesAll, {"a": 1, "b": 2}).settings == {"a": 1, "b": 2}


def test_create_names_a_required_setting_the_platform_does_not_offer() -> None:
    with pytest.raises(UsageError) as caught:
        plugins.create(Needs, {"endpoint": "e", "username": "u"})
    assert str(caught.value) == (
        "the adapter Needs ('needy') needs region, which the platform does not offer it "
        "(it offers: endpoint, username)"
    )
    assert "defaults" in (caught.value.hint or "")
