"""The Registry contract, checked against every implementation (FakeRegistry and oci).

A test module subclasses ``RegistryContract`` and provides three fixtures: ``registry``,
``images`` (two different images already pushed into it as ``<repository>:v1`` and
``:v2``) and ``other_registry`` (a second registry of the same kind, for copies between
registries). Every test writes to repositories and tags of its own, so the fixtures can
be shared by a whole module.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace

import pytest

from stackyard.errors import NotFoundError, PermanentError, UnsupportedError, UsageError
from stackyard.images.manifest import MANIFEST_MEDIA_TYPES
from stackyard.images.registry_base import Registry

NO_SUCH_DIGEST = "sha256:" + "0" * 64


@dataclass(frozen=True)
class RegistryImages:
    """Two different images in the registry under test: ``<repository>:v1`` and ``:v2``."""

    repository: str
    v1: str  # digest
    v2: str  # digest


def fresh(prefix: str) -> str:
    """A name no other test uses: repositories and tags outlive a test in a shared registry."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RegistryContract:
    """Behaviour every Registry must have; subclasses supply the fixtures."""

    # -- reading

    def test_resolve_gives_the_digest_of_a_tag_or_a_digest(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        assert registry.resolve(images.repository, "v1") == images.v1
        assert registry.resolve(images.repository, images.v1) == images.v1
        assert registry.resolve(images.repository, "v2") == images.v2
        assert images.v1 != images.v2

    def test_a_manifest_is_the_bytes_of_its_digest(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        manifest = registry.get_manifest(images.repository, "v2")
        assert manifest.digest == images.v2
        assert "sha256:" + hashlib.sha256(manifest.raw).hexdigest() == images.v2
        assert manifest.media_type in MANIFEST_MEDIA_TYPES
        assert manifest.blobs()
        assert all(registry.blob_exists(images.repository, blob) for blob in manifest.blobs())
        assert not registry.blob_exists(images.repository, NO_SUCH_DIGEST)

    def test_list_tags_names_every_tag(self, registry: Registry, images: RegistryImages) -> None:
        assert {"v1", "v2"} <= set(registry.list_tags(images.repository))

    def test_what_does_not_exist_is_not_found_and_not_retryable(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        nowhere = fresh("nowhere")
        with pytest.raises(NotFoundError, match=f"{images.repository}:nope") as unknown_tag:
            registry.resolve(images.repository, "nope")
        assert unknown_tag.value.retryable is False
        assert registry.endpoint in str(unknown_tag.value)
        with pytest.raises(NotFoundError):
            registry.get_manifest(nowhere, "v1")
        with pytest.raises(NotFoundError):
            registry.get_manifest(images.repository, NO_SUCH_DIGEST)
        with pytest.raises(NotFoundError, match=nowhere):
            registry.list_tags(nowhere)

    def test_list_repositories_when_the_registry_has_a_catalog(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        if registry.supports_catalog:
            assert images.repository in registry.list_repositories()
        else:
            with pytest.raises(UnsupportedError, match="list its repositories"):
                registry.list_repositories()

    # -- retag

    def test_retag_points_a_new_tag_at_the_same_digest_and_moves_no_blob(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        tag = fresh("staging")
        before = replace(registry.counts)
        assert registry.retag(images.repository, "v1", tag) == images.v1
        assert registry.resolve(images.repository, tag) == images.v1
        assert tag in registry.list_tags(images.repository)
        after = registry.counts
        assert (after.blob_uploads, after.bytes_uploaded) == (
            before.blob_uploads,
            before.bytes_uploaded,
        )
        assert after.manifest_puts == before.manifest_puts + 1

    def test_retag_from_a_digest_and_over_an_existing_tag(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        tag = fresh("prod")
        registry.retag(images.repository, images.v1, tag)
        assert registry.retag(images.repository, images.v2, tag) == images.v2
        assert registry.resolve(images.repository, tag) == images.v2
        assert registry.resolve(images.repository, "v1") == images.v1  # the source stays

    def test_put_manifest_whose_blobs_are_missing_is_refused_for_good(
        self, registry: Registry, images: RegistryImages, other_registry: Registry
    ) -> None:
        manifest = registry.get_manifest(images.repository, "v1")
        with pytest.raises(PermanentError) as refused:
            other_registry.put_manifest(fresh("empty"), "v1", manifest)
        assert refused.value.retryable is False

    # -- copy

    def test_copy_to_another_repository_keeps_the_digest(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        to = fresh("eu/app")
        before = replace(registry.counts)
        digest = registry.copy(images.repository, "v2", to_repository=to, to_reference="dev")
        assert digest == images.v2
        assert registry.resolve(to, "dev") == images.v2
        assert registry.list_tags(to) == ["dev"]
        assert registry.resolve(images.repository, "v2") == images.v2
        if registry.supports_cross_repository_mount:
            assert registry.counts.bytes_uploaded == before.bytes_uploaded  # linked, not sent

    def test_copy_keeps_a_tag_name_and_a_second_copy_sends_nothing(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        to = fresh("mirror/app")
        assert registry.copy(images.repository, "v1", to_repository=to) == images.v1
        assert registry.resolve(to, "v1") == images.v1
        before = replace(registry.counts)
        registry.copy(images.repository, "v1", to_repository=to)
        after = registry.counts
        assert (after.blob_uploads, after.blob_mounts, after.bytes_uploaded) == (
            before.blob_uploads,
            before.blob_mounts,
            before.bytes_uploaded,
        )

    def test_copy_to_another_registry_sends_the_blobs_once(
        self, registry: Registry, images: RegistryImages, other_registry: Registry
    ) -> None:
        to = fresh("copied/app")
        blobs = registry.get_manifest(images.repository, "v1").blobs()
        before = replace(other_registry.counts)
        digest = registry.copy(images.repository, "v1", to_repository=to, target=other_registry)
        assert digest == images.v1
        assert other_registry.resolve(to, "v1") == images.v1
        assert all(other_registry.blob_exists(to, blob) for blob in blobs)
        sent = other_registry.counts
        assert sent.blob_uploads - before.blob_uploads == len(blobs)
        assert sent.bytes_uploaded > before.bytes_uploaded
        with pytest.raises(NotFoundError):
            registry.resolve(to, "v1")  # the source registry did not get it
        again = replace(other_registry.counts)
        registry.copy(images.repository, "v1", to_repository=to, target=other_registry)
        assert other_registry.counts.blob_uploads == again.blob_uploads

    def test_copy_of_a_missing_image_is_not_found(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        with pytest.raises(NotFoundError):
            registry.copy(images.repository, "nope", to_repository=fresh("x"))

    # -- delete

    def test_delete_tag_takes_every_tag_of_that_digest_and_leaves_others(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        to = fresh("scratch/app")
        registry.copy(images.repository, "v1", to_repository=to, to_reference="keep")
        registry.retag(to, "keep", "alias")
        registry.copy(images.repository, "v2", to_repository=to, to_reference="other")
        assert registry.delete_tag(to, "keep") == images.v1
        for tag in ("keep", "alias"):
            with pytest.raises(NotFoundError):
                registry.resolve(to, tag)
        assert registry.resolve(to, "other") == images.v2
        assert registry.list_tags(to) == ["other"]
        assert registry.resolve(images.repository, "v1") == images.v1  # another repository

    def test_delete_manifest_wants_a_digest_that_exists(
        self, registry: Registry, images: RegistryImages
    ) -> None:
        with pytest.raises(UsageError, match="needs a digest"):
            registry.delete_manifest(images.repository, "v1")
        with pytest.raises(NotFoundError):
            registry.delete_manifest(fresh("scratch/none"), NO_SUCH_DIGEST)
