"""The Registry contract against the real CNCF distribution registry (the ``oci`` adapter)."""
# ruff: noqa: F811 - pytest fixtures imported from registry_fixtures are used as arguments

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stackyard.images.registry import RegistryClient
from tests.integration.registry_fixtures import (  # noqa: F401 - fixtures
    LiveRegistry,
    PushedImages,
    live_registry,
    pushed_images,
    second_live_registry,
)

from ..registry_contract import RegistryContract, RegistryImages

pytestmark = pytest.mark.integration


def client_of(live: LiveRegistry) -> RegistryClient:
    return RegistryClient(
        live.endpoint, username=live.username, password=live.password, backoff=0.01
    )


class TestDistributionRegistryContract(RegistryContract):
    @pytest.fixture
    def registry(self, live_registry: LiveRegistry) -> Iterator[RegistryClient]:
        with client_of(live_registry) as client:
            yield client

    @pytest.fixture
    def images(self, pushed_images: PushedImages) -> RegistryImages:
        return RegistryImages(pushed_images.repository, pushed_images.v1, pushed_images.v2)

    @pytest.fixture
    def other_registry(self, second_live_registry: LiveRegistry) -> Iterator[RegistryClient]:
        with client_of(second_live_registry) as client:
            yield client
