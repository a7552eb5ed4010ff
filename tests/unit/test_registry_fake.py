"""FakeRegistry keeps the Registry contract; its copies read the mount ability."""

from __future__ import annotations

from typing import ClassVar

import pytest

from stackyard import plugins
from stackyard.errors import UnsupportedError
from stackyard.images.registry import RegistryClient
from stackyard.images.registry_fake import FakeRegistry

from ..registry_contract import RegistryContract, RegistryImages


class TestFakeRegistryContract(RegistryContract):
    @pytest.fixture
    def registry(self) -> FakeRegistry:
        return FakeRegistry()

    @pytest.fixture
    def images(self, registry: FakeRegistry) -> RegistryImages:
        v1 = registry.push_image("test/app", "v1", [b"busybox layer"])
        v2 = registry.push_image("test/app", "v2", [b"busybox layer", b"RUN echo x > /x"])
        return RegistryImages("test/app", v1, v2)

    @pytest.fixture
    def other_registry(self) -> FakeRegistry:
        return FakeRegistry("other-registry.invalid")


def test_registered_as_plugins() -> None:
    assert plugins.registry("fake") is FakeRegistry
    assert plugins.registry("oci") is RegistryClient


class NoMountRegistry(FakeRegistry):
    supports_cross_repository_mount: ClassVar[bool] = False


def test_a_registry_without_mounts_sends_the_blobs_between_repositories() -> None:
    registry = NoMountRegistry()
    registry.push_image("app", "v1", [b"a", b"b"])
    registry.copy("app", "v1", to_repository="eu/app")
    assert (registry.counts.blob_mounts, registry.counts.blob_uploads) == (0, 3)


def test_a_subclass_that_moves_blobs_the_same_way_copies_to_its_base() -> None:
    registry = NoMountRegistry()
    registry.push_image("app", "v1", [b"a"])
    target = FakeRegistry("other-registry.invalid")
    digest = registry.copy("app", "v1", to_repository="app", target=target)
    assert target.resolve("app", "v1") == digest


def test_a_registry_with_mounts_links_the_blobs() -> None:
    registry = FakeRegistry()
    registry.push_image("app", "v1", [b"a", b"b"])
    registry.copy("app", "v1", to_repository="eu/app")
    assert (registry.counts.blob_mounts, registry.counts.blob_uploads) == (3, 0)


def test_copy_between_registries_of_two_kinds_says_what_to_do() -> None:
    fake = FakeRegistry()
    fake.push_image("app", "v1", [b"a"])
    with RegistryClient("127.0.0.1:5000") as real, pytest.raises(UnsupportedError) as caught:
        fake.copy("app", "v1", to_repository="app", target=real)
    assert "FakeRegistry ('fake') to RegistryClient ('oci')" in str(caught.value)
    assert "pull and push" in (caught.value.hint or "")


class NoCatalogRegistry(FakeRegistry):
    supports_catalog: ClassVar[bool] = False

    def list_repositories(self) -> list[str]:
        return super(FakeRegistry, self).list_repositories()


def test_a_registry_without_a_catalog_says_so_when_asked_for_one() -> None:
    with pytest.raises(UnsupportedError, match="cannot list its repositories"):
        NoCatalogRegistry().list_repositories()
