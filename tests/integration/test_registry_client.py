"""RegistryClient against the real CNCF distribution registry, checked with skopeo."""
# ruff: noqa: F811 - pytest fixtures imported from registry_fixtures are used as arguments

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.errors import NotFoundError, PermanentError, RetryableError
from stackyard.images.manifest import DOCKER_MANIFEST
from stackyard.images.registry import RegistryClient
from tests.integration.conftest import free_port
from tests.integration.registry_fixtures import (  # noqa: F401 - fixtures
    LiveRegistry,
    PushedImages,
    live_registry,
    pushed_images,
    running_registry,
)

pytestmark = pytest.mark.integration


def client(registry: LiveRegistry, **kwargs: object) -> RegistryClient:
    options: dict[str, object] = {
        "username": registry.username,
        "password": registry.password,
        "backoff": 0.01,
        **kwargs,
    }
    return RegistryClient(registry.endpoint, **options)  # type: ignore[arg-type]


def test_basic_auth_against_the_real_registry(live_registry: LiveRegistry) -> None:
    with client(live_registry) as good:
        good.ping()
    with client(live_registry, password="wrong") as bad, pytest.raises(PermanentError) as caught:
        bad.ping()
    assert "refused the credentials" in str(caught.value)
    anonymous = RegistryClient(live_registry.endpoint)
    with anonymous, pytest.raises(PermanentError, match="requires credentials"):
        anonymous.ping()


def test_resolve_matches_docker_push_and_skopeo(
    live_registry: LiveRegistry, pushed_images: PushedImages
) -> None:
    repo = pushed_images.repository
    with client(live_registry) as registry:
        v1 = registry.resolve(repo, "v1")
        manifest = registry.get_manifest(repo, "v2")
    assert v1 == pushed_images.v1 == live_registry.skopeo_digest(repo, "v1")
    assert manifest.digest == pushed_images.v2 == live_registry.skopeo_digest(repo, "v2")
    assert manifest.media_type == DOCKER_MANIFEST
    assert v1 != manifest.digest


def test_retag_uploads_no_blob_and_keeps_the_digest(
    live_registry: LiveRegistry, pushed_images: PushedImages
) -> None:
    repo = pushed_images.repository
    before = len(live_registry.access_log())
    with client(live_registry) as registry:
        digest = registry.retag(repo, "v2", "staging")
        assert registry.counts.blob_uploads == 0
    new = live_registry.access_log()[before:]
    blob_requests = [e for e in new if "/blobs/" in e.uri]
    manifest_puts = [e for e in new if e.method == "PUT" and "/manifests/" in e.uri]
    assert blob_requests == []
    assert [(e.uri, e.status) for e in manifest_puts] == [(f"/v2/{repo}/manifests/staging", 201)]
    assert digest == pushed_images.v2
    assert live_registry.skopeo_digest(repo, "staging") == pushed_images.v2


def test_copy_to_another_repository_mounts_every_blob(
    live_registry: LiveRegistry, pushed_images: PushedImages
) -> None:
    repo = pushed_images.repository
    before = len(live_registry.access_log())
    with client(live_registry) as registry:
        digest = registry.copy(repo, "v2", to_repository="eu/app", to_reference="staging")
        mounts, uploads = registry.counts.blob_mounts, registry.counts.blob_uploads
        blobs = registry.get_manifest(repo, "v2").blobs()
    new = live_registry.access_log()[before:]
    assert digest == pushed_images.v2
    assert uploads == 0
    assert mounts == len(blobs)  # the config and every layer
    posts = [e for e in new if e.method == "POST"]
    assert all("mount=" in e.uri and e.status == 201 for e in posts)
    assert not any(e.method == "PATCH" for e in new)
    assert live_registry.skopeo_digest("eu/app", "staging") == pushed_images.v2


def test_copy_to_another_registry_streams_blobs(
    live_registry: LiveRegistry, pushed_images: PushedImages, tmp_path: Path
) -> None:
    repo = pushed_images.repository
    with (
        running_registry(tmp_path) as other,
        client(live_registry) as source,
        client(other) as target,
    ):
        digest = source.copy(repo, "v1", to_repository="mirror/app", target=target)
        assert digest == pushed_images.v1
        blobs = source.get_manifest(repo, "v1").blobs()
        assert (target.counts.blob_uploads, target.counts.blob_mounts) == (len(blobs), 0)
        assert target.counts.bytes_uploaded > 0
        assert target.get_manifest("mirror/app", "v1").raw == source.get_manifest(repo, "v1").raw
        assert other.skopeo_digest("mirror/app", "v1") == pushed_images.v1


def test_list_tags_pages_through_the_real_registry(
    live_registry: LiveRegistry, pushed_images: PushedImages
) -> None:
    repo = pushed_images.repository
    with client(live_registry) as registry:
        for tag in ("p1", "p2", "p3"):
            registry.retag(repo, "v1", tag)
        tags = registry.list_tags(repo, page_size=2)
        repositories = registry.list_repositories(page_size=1)
    assert {"v1", "v2", "p1", "p2", "p3"} <= set(tags)
    assert len(tags) == len(set(tags))
    assert repo in repositories


def test_delete_tag_removes_every_tag_of_that_digest(
    live_registry: LiveRegistry, pushed_images: PushedImages
) -> None:
    repo = pushed_images.repository
    with client(live_registry) as registry:
        registry.retag(repo, "v1", "doomed-a")
        registry.retag(repo, "v1", "doomed-b")
        registry.copy(repo, "v1", to_repository="scratch/app", to_reference="keep")
        assert registry.delete_tag("scratch/app", "keep") == pushed_images.v1
        with pytest.raises(NotFoundError, match="scratch/app:keep"):
            registry.resolve("scratch/app", "keep")
        # Deleting by digest in test/app would take v1, doomed-a and doomed-b together:
        registry.delete_manifest(repo, pushed_images.v1)
        tags = registry.list_tags(repo)
    assert not {"v1", "doomed-a", "doomed-b"} & set(tags)
    assert "v2" in tags


def test_missing_tag_is_not_found(live_registry: LiveRegistry) -> None:
    with client(live_registry) as registry, pytest.raises(NotFoundError, match="nothing:here"):
        registry.resolve("nothing", "here")


def test_stopped_registry_is_retryable_and_names_it() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    registry = RegistryClient(endpoint, retries=3, backoff=0.01)
    with registry, pytest.raises(RetryableError) as caught:
        registry.resolve("app", "dev")
    assert str(caught.value) == (
        f"registry {endpoint} did not answer to resolve app:dev after 3 attempts: "
        "connection refused"
    )
