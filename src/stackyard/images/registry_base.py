"""The Registry seam: resolve, read, retag, copy, list and delete images in one registry.

Releases and the image store talk only to this class. ``oci`` (``RegistryClient``,
registry.py) speaks the OCI distribution API to any registry; ``FakeRegistry``
(registry_fake.py) keeps images in memory for unit tests. Implementations register
under the ``stackyard.registries`` entry point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Self, cast

from stackyard.errors import (
    NotFoundError,
    PermanentError,
    UnsupportedError,
    UsageError,
    require,
)
from stackyard.images.manifest import Manifest
from stackyard.images.reference import is_digest


@dataclass
class TransferCounts:
    """What a registry received through one Registry object: tests and benchmarks read it."""

    blob_uploads: int = 0
    blob_mounts: int = 0
    bytes_uploaded: int = 0
    manifest_puts: int = 0


def not_found(what: str, endpoint: str) -> NotFoundError:
    """The error every registry raises for a missing image, repository or blob."""
    return NotFoundError(
        f"{what} not found in registry {endpoint}",
        hint="check the repository, tag or digest; list tags to see what exists",
    )


class Registry(ABC):
    """One registry endpoint, e.g. ``127.0.0.1:5000`` or ``ghcr.io``.

    A reference is a tag or a digest. A retag or a copy puts the very same manifest bytes,
    so an image keeps its digest wherever it goes. ``counts`` says what the registry
    received through this object: tests and benchmarks read it to check that a retag
    moves no blob.
    """

    name: ClassVar[str]
    supports_cross_repository_mount: ClassVar[bool] = False
    """Whether a copy between two repositories of this registry links blobs, not bytes."""
    supports_catalog: ClassVar[bool] = False
    """Whether `list_repositories` can list every repository of the registry."""

    endpoint: str
    """``host[:port]``: what engines and ``docker`` pull from."""
    counts: TransferCounts

    # -- reading

    @abstractmethod
    def resolve(self, repository: str, reference: str) -> str:
        """The digest a tag (or digest) points at; NotFoundError when there is none."""

    def has_manifest(self, repository: str, digest: str) -> bool:
        """Whether the registry holds manifest ``digest``: False when it says it does not.
        Asked once, without the retries of other calls: a registry that does not answer
        raises (RetryableError) at once, for a caller that goes on without an answer."""
        try:
            self.resolve(repository, digest)
        except NotFoundError:
            return False
        return True

    @abstractmethod
    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest exactly as stored, with its media type and digest."""

    @abstractmethod
    def list_tags(self, repository: str) -> list[str]:
        """Every tag of a repository; NotFoundError when the repository does not exist."""

    @abstractmethod
    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository holds the blob (a layer or a config)."""

    def list_repositories(self) -> list[str]:
        """Every repository of the registry, when it offers a catalog."""
        require(
            self,
            "catalog",
            needed_for="list its repositories",
            hint="ask for the tags of a repository you know instead",
        )
        raise NotImplementedError(f"{type(self).__name__} declares a catalog but lists none")

    # -- writing

    @abstractmethod
    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store the exact bytes under ``reference``; returns the digest the registry reports.

        PermanentError when a blob the manifest names is not in the repository.
        """

    @abstractmethod
    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest; every tag that points at it goes with it."""

    def retag(self, repository: str, source: str, tag: str) -> str:
        """Point ``tag`` at what ``source`` (a tag or digest) points at; no blob moves.

        Returns the digest, which is the source's digest because the bytes are the same.
        """
        manifest = self.get_manifest(repository, source)
        digest = self.put_manifest(repository, tag, manifest)
        if digest != manifest.digest:
            raise PermanentError(
                f"registry {self.endpoint} stored {repository}:{tag} as {digest}, "
                f"not {manifest.digest}: it rewrote the manifest"
            )
        return digest

    def copy(
        self,
        repository: str,
        reference: str,
        *,
        to_repository: str,
        to_reference: str | None = None,
        target: Registry | None = None,
    ) -> str:
        """Copy an image (or an index with all its images) to another repository/registry.

        Blobs the target already has are skipped; the manifest goes last, once every blob
        it names is there. Without ``to_reference``, a tag keeps its name and a digest
        stays untagged. Returns the manifest digest.
        """
        destination = self._same_kind(target or self)
        manifest = self.get_manifest(repository, reference)
        for child in manifest.children():
            child_manifest = self.get_manifest(repository, child)
            self._copy_blobs(child_manifest, repository, destination, to_repository)
            destination.put_manifest(to_repository, child, child_manifest)
        self._copy_blobs(manifest, repository, destination, to_repository)
        final = to_reference or (reference if not is_digest(reference) else manifest.digest)
        return destination.put_manifest(to_repository, final, manifest)

    def _same_kind(self, target: Registry) -> Self:
        # Two registries can copy between them when they move blobs the same way: the same
        # _copy_blobs (an ECR subclass of RegistryClient copies to a plain one).
        if type(target)._copy_blobs is not type(self)._copy_blobs:
            raise UnsupportedError(
                f"cannot copy from {type(self).__name__} ({self.name!r}) to "
                f"{type(target).__name__} ({target.name!r}): a copy goes between "
                "registries of one kind",
                hint="copy through a registry of the same kind, or pull and push the image",
            )
        return cast(Self, target)

    @abstractmethod
    def _copy_blobs(
        self, manifest: Manifest, repository: str, target: Self, to_repository: str
    ) -> None:
        """Make every blob of ``manifest`` exist in ``to_repository`` of ``target``."""

    def delete_tag(self, repository: str, tag: str) -> str:
        """Delete the manifest ``tag`` points at, and return its digest.

        Registries delete by digest, so EVERY tag that points at the same digest
        disappears with it. Move the other tags first if they must stay.
        """
        digest = self.resolve(repository, tag)
        self.delete_manifest(repository, digest)
        return digest

    @staticmethod
    def require_digest(digest: str) -> None:
        """UsageError unless ``digest`` is ``algorithm:hex``: deletes never take a tag."""
        if not is_digest(digest):
            raise UsageError(f"delete_manifest needs a digest, not {digest!r}")

    # -- lifecycle

    def ping(self) -> None:  # noqa: B027 - optional: adapters that can check cheaply do
        """Raise when the registry does not answer or refuses the credentials."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the registry client holds (connections)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
