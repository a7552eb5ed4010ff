"""The ``oci`` Registry: the OCI distribution API, spoken to any registry.

``RegistryClient`` talks plain HTTP (httpx, through registry_transport.py) to the embedded
registry or to any OCI registry (ECR, GHCR, Harbor, Docker Hub). A retag copies the
manifest bytes exactly, so a promoted tag has the very same digest and no layer moves.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import httpx

from stackyard.errors import PermanentError
from stackyard.images.manifest import ACCEPT, MANIFEST_MEDIA_TYPES, Manifest, media_type_in
from stackyard.images.reference import ManifestRef, is_digest
from stackyard.images.registry_base import Registry, TransferCounts
from stackyard.images.registry_blobs import BlobTransfer, blob_exists
from stackyard.images.registry_transport import (
    CHECK_TIMEOUT,
    READ_ONLY_WAIT,
    RegistryTransport,
    pull_scope,
    push_scope,
)


class RegistryClient(Registry):
    """One registry endpoint, e.g. ``127.0.0.1:5000`` or ``ghcr.io``.

    Retryable failures (refused, timeouts, 5xx, 429) are tried ``retries`` times in all
    with exponential backoff from ``backoff`` seconds, then raised as RetryableError;
    401/403/404/other 4xx are not retryable and raise at once.
    """

    name: ClassVar[str] = "oci"
    supports_cross_repository_mount: ClassVar[bool] = True
    supports_catalog: ClassVar[bool] = True  # the API has one; Docker Hub and GHCR refuse it

    def __init__(
        self,
        endpoint: str,
        *,
        username: str | None = None,
        password: str | None = None,
        scheme: str | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 30.0,
        check_timeout: float = CHECK_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        read_only_wait: float = READ_ONLY_WAIT,
        credentials_hint: str = "check the registry username and password",
    ) -> None:
        self._transport = RegistryTransport(
            endpoint,
            username=username,
            password=password,
            scheme=scheme,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            check_timeout=check_timeout,
            transport=transport,
            read_only_wait=read_only_wait,
            credentials_hint=credentials_hint,
        )
        self.endpoint = self._transport.endpoint
        self.scheme = self._transport.scheme
        self.base_url = self._transport.base_url
        self.counts = TransferCounts()

    # -- lifecycle

    def close(self) -> None:
        self._transport.close()

    @property
    def auth_scheme(self) -> str | None:
        """``basic`` or ``bearer`` once the registry has asked for credentials, else None."""
        return self._transport.auth.scheme

    # -- reading

    def ping(self) -> None:
        """Check that the registry answers the v2 API and accepts the credentials."""
        self._transport.request("GET", "/v2/", operation="ping", scopes=())

    def resolve(self, repository: str, reference: str) -> str:
        """The digest a tag (or digest) points at: HEAD, falling back to hashing the body."""
        ref = ManifestRef(repository, reference)
        response = self._head(ref, f"resolve {ref}", missing=f"image {ref}")
        digest: str | None = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        return self.get_manifest(repository, reference).digest

    def has_manifest(self, repository: str, digest: str) -> bool:
        """One ``HEAD`` of the manifest, one attempt (a refused connection, a timeout or a
        5xx raise RetryableError at once; the 401 challenge and its token are part of the
        attempt): the deploy's image check goes on without an answer rather than wait
        through the retries (3.5 s of back-off with the defaults). Each answer within
        ``check_timeout`` (10 s): a registry that accepts and never answers is said so soon,
        not after the 30 s read timeout made for blob transfers."""
        ref = ManifestRef(repository, digest)
        response = self._head(ref, f"look for {ref}", allow={404}, attempts=1, check=True)
        return response.status_code != 404

    def _head(self, ref: ManifestRef, operation: str, **options: Any) -> httpx.Response:
        """``HEAD`` of a manifest (``options``: the transport's ``missing``, ``allow``,
        ``attempts``)."""
        return self._transport.request(
            "HEAD",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            operation=operation,
            scopes=(pull_scope(ref.repository),),
            headers={"Accept": ACCEPT},
            **options,
        )

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest as raw bytes with its media type and digest."""
        ref = ManifestRef(repository, reference)
        response = self._transport.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            operation=f"get manifest {ref}",
            scopes=(pull_scope(repository),),
            headers={"Accept": ACCEPT},
            missing=f"image {ref}",
        )
        raw = response.content
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        digest = response.headers.get("Docker-Content-Digest") or computed
        if is_digest(reference) and reference.startswith("sha256:") and reference != computed:
            raise PermanentError(
                f"registry {self.endpoint} served {ref} with digest {computed}, "
                "not the one asked for; refusing to use it"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES:
            media_type = media_type_in(raw) or media_type
        return Manifest(digest=digest, media_type=media_type, raw=raw)

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of a repository, following the ``Link: rel="next"`` pages."""
        return self._transport.paged(
            f"/v2/{repository}/tags/list",
            "tags",
            operation=f"list tags of {repository}",
            scopes=(pull_scope(repository),),
            page_size=page_size,
            missing=f"repository {repository}",
        )

    def list_repositories(self, *, page_size: int | None = None) -> list[str]:
        """The registry's catalog (registries like Docker Hub and GHCR do not offer it)."""
        return self._transport.paged(
            "/v2/_catalog",
            "repositories",
            operation="list repositories",
            scopes=("registry:catalog:*",),
            page_size=page_size,
            missing="the catalog endpoint",
        )

    def blob_exists(self, repository: str, digest: str) -> bool:
        return blob_exists(self._transport, repository, digest)

    # -- writing

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """PUT the exact bytes with their media type; returns the digest the registry reports."""
        ref = ManifestRef(repository, reference)
        response = self._transport.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            operation=f"put manifest {ref}",
            scopes=(push_scope(repository),),
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
        )
        self.counts.manifest_puts += 1
        return response.headers.get("Docker-Content-Digest") or manifest.digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (all its tags go with it); blobs stay until GC."""
        self.require_digest(digest)
        ref = ManifestRef(repository, digest)
        self._transport.request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            operation=f"delete {ref}",
            scopes=(f"repository:{repository}:delete", push_scope(repository)),
            missing=f"image {ref}",
        )

    # -- blob moves

    def _copy_blobs(
        self, manifest: Manifest, repository: str, target: RegistryClient, to_repository: str
    ) -> None:
        mount = self.supports_cross_repository_mount and target.supports_cross_repository_mount
        blobs = BlobTransfer(self._transport, target._transport, target.counts, mount=mount)
        blobs.copy_blobs(manifest, repository, to_repository)
