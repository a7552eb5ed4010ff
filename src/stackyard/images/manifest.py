"""An image manifest exactly as a registry served it, and the media types Stackyard reads.

The registry client returns these; a retag or a copy puts the very same bytes back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stackyard.errors import PermanentError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry served it; ``raw`` is never re-serialised."""

    digest: str
    media_type: str
    raw: bytes

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    def _document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.raw)
        except ValueError as exc:
            raise PermanentError(f"manifest {self.digest} is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise PermanentError(f"manifest {self.digest} is not a JSON object")
        return document

    def children(self) -> list[str]:
        """Digests of the manifests an index (manifest list) points at; [] for an image."""
        if not self.is_index:
            return []
        return [entry["digest"] for entry in self._document().get("manifests", [])]

    def blobs(self) -> list[str]:
        """Digests of the config blob and the layers an image manifest needs, in that order."""
        if self.is_index:
            return []
        document = self._document()
        descriptors = [document["config"]] if "config" in document else []
        # Foreign (non-distributable) layers live elsewhere and are never copied.
        descriptors += [
            layer
            for layer in document.get("layers", [])
            if "foreign" not in layer.get("mediaType", "")
            and "nondistributable" not in layer.get("mediaType", "")
        ]
        return [descriptor["digest"] for descriptor in descriptors]


def media_type_in(raw: bytes) -> str | None:
    """The ``mediaType`` a manifest names in its own body, when the server's header does not."""
    try:
        value = json.loads(raw).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
