"""Blob transfer between registries: skip what the target has, mount, or stream the bytes.

The registry client's ``copy`` calls ``BlobTransfer`` for each manifest it copies; the
manifest itself is put afterwards, once every blob it names is in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from stackyard.errors import RetryableError
from stackyard.images.manifest import Manifest
from stackyard.images.registry_base import TransferCounts
from stackyard.images.registry_transport import (
    RETRY_STATUSES,
    RegistryTransport,
    describe,
    pull_scope,
    push_scope,
)

CHUNK = 1 << 20


def blob_exists(transport: RegistryTransport, repository: str, digest: str) -> bool:
    response = transport.request(
        "HEAD",
        f"/v2/{repository}/blobs/{digest}",
        operation=f"check blob {digest} in {repository}",
        scopes=(pull_scope(repository),),
        allow={404},
    )
    return response.status_code == 200


class BlobTransfer:
    """Moves the blobs of manifests from ``source`` to ``target``, counting into ``counts``.

    Within one registry a blob is mounted from its repository when ``mount`` is set (the
    adapter's ``supports_cross_repository_mount``), and streamed otherwise.
    """

    def __init__(
        self,
        source: RegistryTransport,
        target: RegistryTransport,
        counts: TransferCounts,
        *,
        mount: bool = True,
    ) -> None:
        self.source = source
        self.target = target
        self.counts = counts
        self.mount = mount

    def copy_blobs(self, manifest: Manifest, repository: str, to_repository: str) -> None:
        """Make every blob ``manifest`` names exist in ``to_repository`` of the target."""
        same_registry = self.target.base_url == self.source.base_url
        for digest in manifest.blobs():
            if same_registry and repository == to_repository:
                continue  # already there: the manifest was read from this very repository
            if blob_exists(self.target, to_repository, digest):
                continue
            if same_registry and self.mount and self._mount(to_repository, digest, repository):
                continue
            self._stream_blob(repository, digest, to_repository)

    def _mount(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; False when the registry started an upload instead."""
        target = self.target
        response = target.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            operation=f"mount blob {digest} into {repository}",
            scopes=(push_scope(repository), pull_scope(from_repository)),
            params={"mount": digest, "from": from_repository},
        )
        if response.status_code == 201:
            self.counts.blob_mounts += 1
            return True
        self.counts.blob_uploads += 1
        location = response.headers.get("Location")
        if location:  # an unused upload session: cancel it rather than leave it to expire
            target.request(
                "DELETE",
                target.url(location),
                operation=f"cancel upload into {repository}",
                scopes=(push_scope(repository),),
                allow={404},
            )
        return False

    def _stream_blob(self, repository: str, digest: str, to_repository: str) -> None:
        operation = (
            f"copy blob {digest} from {repository} to {self.target.endpoint}/{to_repository}"
        )
        self.source.retrying(
            operation,
            lambda: self._stream_blob_once(repository, digest, to_repository, operation),
        )

    def _stream_blob_once(
        self, repository: str, digest: str, to_repository: str, operation: str
    ) -> None:
        source, target = self.source, self.target
        start = target.send_once(
            "POST", f"/v2/{to_repository}/blobs/uploads/", scopes=(push_scope(to_repository),)
        )
        target.check(start, operation, missing=f"repository {to_repository}")
        self.counts.blob_uploads += 1
        location = target.url(start.headers["Location"])
        source_url = f"{source.base_url}/v2/{repository}/blobs/{digest}"
        scopes = (pull_scope(repository),)
        # A HEAD first answers any auth challenge, so the streamed GET goes out authorised.
        probe = source.send_once("HEAD", source_url, scopes=scopes)
        source.check(probe, operation, missing=f"blob {digest} in {repository}")
        with source.http.stream("GET", source_url, headers=source.auth.headers(scopes)) as body:
            self._upload_from(body, location, digest, to_repository, operation)

    def _upload_from(
        self,
        source: httpx.Response,
        location: str,
        digest: str,
        to_repository: str,
        operation: str,
    ) -> None:
        target = self.target
        if source.status_code in RETRY_STATUSES:
            raise RetryableError(f"HTTP {source.status_code} reading the blob")
        if source.status_code != 200:
            source.read()
            self.source.check(source, operation, missing=f"blob {digest}")
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            for chunk in source.iter_bytes(CHUNK):
                sent += len(chunk)
                yield chunk

        scopes = (push_scope(to_repository),)
        headers = {**target.auth.headers(scopes), "Content-Type": "application/octet-stream"}
        try:
            patch = target.http.patch(location, content=body(), headers=headers)
        except httpx.TransportError as exc:
            raise RetryableError(describe(exc)) from exc
        target.check(patch, operation)
        location = target.url(patch.headers.get("Location", location))
        # The upload URL carries state in its query; add the digest to it, do not replace it.
        finish = str(httpx.URL(location).copy_merge_params({"digest": digest}))
        done = target.send_once("PUT", finish, scopes=scopes)
        target.check(done, operation)
        self.counts.bytes_uploaded += sent
