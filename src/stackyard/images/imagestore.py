"""The stack images in the platform's registry: one repository per stack, tags by digest.

Builds, releases, the deploy controller and the ``images`` listing go through this; it
speaks to the registry only through the ``Registry`` seam (images/registry_base.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from stackyard.errors import NotFoundError
from stackyard.images.registry_base import Registry
from stackyard.registry_login import RegistryLogin


@dataclass(frozen=True)
class ImageGroup:
    """One image (a digest) and every tag that points at it."""

    digest: str
    tags: list[str]
    size: int


class ImageStore:
    """The platform registry's stack images, reached through ``client`` as ``credentials``."""

    def __init__(self, client: Registry, credentials: RegistryLogin) -> None:
        self.client = client
        self.credentials = credentials

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    def image_url(self, stack: str) -> str:
        return f"{self.endpoint}/{stack}"

    def tag_digests(self, stack: str, tags: Iterable[str]) -> dict[str, str]:
        """The digest of each tag that exists; tags (or a repository) that don't are left out."""
        found = {}
        for tag in tags:
            try:
                found[tag] = self.client.resolve(stack, tag)
            except NotFoundError:
                continue
        return found

    def all_tag_digests(self, stack: str) -> dict[str, str]:
        """The digest of every tag of the stack's repository."""
        return self.tag_digests(stack, self.list_tags(stack))

    def digest(self, stack: str, tag: str) -> str:
        return self.client.resolve(stack, tag)

    def retag(self, stack: str, source: str, tag: str) -> str:
        return self.client.retag(stack, source, tag)

    def restore_tags(
        self,
        stack: str,
        previous: dict[str, str],
        *,
        tags: Iterable[str],
        log: Callable[[str], None],
    ) -> None:
        """Put ``tags`` back where they pointed before a failed build.

        First every tag that existed is moved back; then, reading the tags again, what only
        the failed build pushed is removed, unless a tag that stays shares its digest
        (distribution deletes by digest, which would take both).
        """
        tags = list(tags)
        current = self.all_tag_digests(stack)
        for tag, digest in plan_restores(current, previous, tags).items():
            self.client.retag(stack, digest, tag)
            log(f"restored {tag} -> {digest}")
        restored = self.all_tag_digests(stack)
        for removal in plan_removals(restored, previous, tags):
            names = ", ".join(removal.tags)
            if removal.kept_by:
                log(
                    f"left {names}: its digest {removal.digest} is also tagged "
                    f"{', '.join(removal.kept_by)}"
                )
                continue
            self.client.delete_manifest(stack, removal.digest)
            log(f"removed {names}, which the failed build pushed")

    def forget(self, stack: str) -> int:
        """Delete every manifest of the stack's repository (the stack was deleted); blobs
        stay until the registry's garbage collection. Returns how many went."""
        digests = set(self.all_tag_digests(stack).values())
        for digest in digests:
            self.client.delete_manifest(stack, digest)
        return len(digests)

    def list_tags(self, stack: str) -> list[str]:
        try:
            return self.client.list_tags(stack)
        except NotFoundError:
            return []

    def images(self, stack: str) -> list[ImageGroup]:
        """Every image of the stack (one per digest) with all the tags that point at it."""
        groups: dict[str, list[str]] = {}
        for tag in sorted(self.list_tags(stack)):
            groups.setdefault(self.client.resolve(stack, tag), []).append(tag)
        images = []
        for digest, tags in groups.items():
            manifest = self.client.get_manifest(stack, digest)
            images.append(ImageGroup(digest=digest, tags=tags, size=_size(manifest.raw)))
        return images

    def docker_config(self, directory: Path) -> Path:
        """A ``DOCKER_CONFIG`` directory whose client is logged in to this registry."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / "config.json"
        path.write_text(json.dumps(self.credentials.docker_config()), encoding="utf-8")
        path.chmod(0o600)
        return directory


@dataclass(frozen=True)
class Removal:
    """A digest that only a failed build tagged: delete it, unless a kept tag shares it."""

    digest: str
    tags: list[str]
    kept_by: list[str]


def plan_restores(
    current: dict[str, str], previous: dict[str, str], tags: Iterable[str]
) -> dict[str, str]:
    """Each of ``tags`` that existed before and was moved: tag -> the digest to put back."""
    return {
        tag: previous[tag] for tag in tags if tag in previous and current.get(tag) != previous[tag]
    }


def plan_removals(
    current: dict[str, str], previous: dict[str, str], tags: Iterable[str]
) -> list[Removal]:
    """The digests of the ``tags`` that did not exist before, read after the restores.

    ``current`` holds every tag of the repository. A digest is kept when a tag that stays
    (any tag but the failed build's new ones) points at it.
    """
    new = [tag for tag in tags if tag not in previous and tag in current]
    kept = {tag: digest for tag, digest in current.items() if tag not in new}
    by_digest: dict[str, list[str]] = {}
    for tag in new:
        by_digest.setdefault(current[tag], []).append(tag)
    return [
        Removal(
            digest=digest,
            tags=names,
            kept_by=sorted(tag for tag, d in kept.items() if d == digest),
        )
        for digest, names in by_digest.items()
    ]


def _size(raw: bytes) -> int:
    """Config plus layer sizes from a manifest; 0 for an index or an unreadable manifest."""
    try:
        document = json.loads(raw)
    except ValueError:
        return 0
    parts = [document.get("config", {}), *document.get("layers", [])]
    return sum(int(part.get("size", 0)) for part in parts if isinstance(part, dict))
