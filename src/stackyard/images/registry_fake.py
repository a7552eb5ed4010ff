"""An in-memory Registry for unit tests: images, tags and blobs in dicts, no process.

It keeps the Registry contract (tests/registry_contract.py) as the real ``oci`` one does,
so that tests of release and image code can run without a registry. ``push_image`` puts an
image in, as ``docker push`` would.
"""

from __future__ import annotations

import hashlib
import json
from typing import ClassVar

from stackyard.errors import NotFoundError, PermanentError, RetryableError
from stackyard.images.manifest import DOCKER_MANIFEST, Manifest
from stackyard.images.reference import ManifestRef, is_digest
from stackyard.images.registry_base import Registry, TransferCounts, not_found


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry(Registry):
    """Repositories of one fake endpoint; two FakeRegistry objects are two registries."""

    name: ClassVar[str] = "fake"
    supports_cross_repository_mount: ClassVar[bool] = True
    supports_catalog: ClassVar[bool] = True

    def __init__(self, endpoint: str = "fake-registry.invalid") -> None:
        self.endpoint = endpoint
        self.counts = TransferCounts()
        self.blobs: dict[str, bytes] = {}
        self.repository_blobs: set[tuple[str, str]] = set()
        self.manifests: dict[tuple[str, str], Manifest] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.down = False  # test control: every read fails as a registry that is away

    # -- test controls

    def push_image(self, repository: str, tag: str, layers: list[bytes]) -> str:
        """Store an image made of ``layers`` (and a config) as ``repository:tag``; its digest."""
        config = json.dumps({"architecture": "amd64", "layers": len(layers)}).encode()
        for blob in (config, *layers):
            self.blobs[sha256(blob)] = blob
            self.repository_blobs.add((repository, sha256(blob)))
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "config", "size": len(config), "digest": sha256(config)},
            "layers": [
                {"mediaType": "layer", "size": len(layer), "digest": sha256(layer)}
                for layer in layers
            ],
        }
        raw = json.dumps(document, indent=3).encode()
        return self.put_manifest(repository, tag, Manifest(sha256(raw), DOCKER_MANIFEST, raw))

    # -- reading

    def resolve(self, repository: str, reference: str) -> str:
        return self.get_manifest(repository, reference).digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        if self.down:
            raise RetryableError(f"registry {self.endpoint} did not answer (connection refused)")
        digest = reference if is_digest(reference) else self.tags.get((repository, reference))
        manifest = self.manifests.get((repository, digest or ""))
        if manifest is None:
            raise self._not_found(f"image {ManifestRef(repository, reference)}")
        return manifest

    def list_tags(self, repository: str) -> list[str]:
        if repository not in self._repositories():
            raise self._not_found(f"repository {repository}")
        return sorted(tag for name, tag in self.tags if name == repository)

    def list_repositories(self) -> list[str]:
        return sorted(self._repositories())

    def blob_exists(self, repository: str, digest: str) -> bool:
        return (repository, digest) in self.repository_blobs

    # -- writing

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        needed = manifest.blobs() + manifest.children()
        missing = [
            digest
            for digest in needed
            if not self.blob_exists(repository, digest)
            and (repository, digest) not in self.manifests
        ]
        if missing:
            raise PermanentError(
                f"registry {self.endpoint} rejected put manifest "
                f"{ManifestRef(repository, reference)}: MANIFEST_BLOB_UNKNOWN: {missing[0]}"
            )
        self.manifests[(repository, manifest.digest)] = manifest
        if not is_digest(reference):
            self.tags[(repository, reference)] = manifest.digest
        self.counts.manifest_puts += 1
        return manifest.digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.require_digest(digest)
        if self.manifests.pop((repository, digest), None) is None:
            raise self._not_found(f"image {ManifestRef(repository, digest)}")
        for key in [key for key, value in self.tags.items() if key[0] == repository]:
            if self.tags[key] == digest:
                del self.tags[key]

    def _copy_blobs(
        self, manifest: Manifest, repository: str, target: FakeRegistry, to_repository: str
    ) -> None:
        same_registry = target is self
        mount = self.supports_cross_repository_mount and same_registry
        for digest in manifest.blobs():
            if target.blob_exists(to_repository, digest):
                continue
            if not self.blob_exists(repository, digest):
                raise self._not_found(f"blob {digest} in {repository}")
            target.repository_blobs.add((to_repository, digest))
            if mount:
                target.counts.blob_mounts += 1
                continue
            target.blobs[digest] = self.blobs[digest]
            target.counts.blob_uploads += 1
            target.counts.bytes_uploaded += len(self.blobs[digest])

    # -- helpers

    def _repositories(self) -> set[str]:
        return {name for name, _ in self.repository_blobs} | {name for name, _ in self.manifests}

    def _not_found(self, what: str) -> NotFoundError:
        return not_found(what, self.endpoint)
