"""The stack images: one repository per stack, tags by digest.

A stack's images are in the platform's registry (repository ``<stack>``), or, when the
stack names an outside registry, there (``<namespace>/<stack>``): ``placement`` says
which, and every method follows it. Builds, releases, the deploy controller and the
``images`` listing go through this; it speaks to registries only through the
``Registry`` seam (images/registry_base.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

from stackyard.errors import NotFoundError, PermanentError
from stackyard.images.registry_base import Registry
from stackyard.registry_login import RegistryLogin


@dataclass(frozen=True)
class ImageGroup:
    """One image (a digest) and every tag that points at it."""

    digest: str
    tags: list[str]
    size: int


@dataclass(frozen=True)
class Placement:
    """An outside registry a stack's images live in: where, under which namespace, and
    the login the platform pushes and pulls with."""

    registry: str  # its name (``stackyard registries``)
    scheme: str | None  # None: http for loopback, https otherwise
    namespace: str
    login: RegistryLogin

    @property
    def endpoint(self) -> str:
        return self.login.registry

    def repository(self, stack: str) -> str:
        return f"{self.namespace}/{stack}" if self.namespace else stack


LOCAL_TARGET = "local"  # the built-in target: the platform's engine, the stack's registry


@dataclass(frozen=True)
class TargetPlace:
    """A target as releases and deployments see it: its region and the registry its engine
    pulls from (``placement``; None: the platform's own). The built-in ``local`` pulls from
    wherever the stack's images are, so nothing is copied for it."""

    name: str
    region: str = ""
    placement: Placement | None = None
    builtin: bool = True


def only_local(name: str) -> TargetPlace:
    """The targets of a platform that knows only ``local`` (tests, and the default)."""
    if name != LOCAL_TARGET:
        raise NotFoundError(f"no target named '{name}' (targets: {LOCAL_TARGET})")
    return TargetPlace(LOCAL_TARGET)


Placements = Callable[[str], Placement | None]
"""stack -> its outside registry, or None for the platform's own."""


def _no_placement(_stack: str) -> Placement | None:
    return None


class ImageStore:
    """The stack images, in the platform registry (``client``, as ``credentials``) or in
    the outside registry ``placement`` names for a stack (a client made by ``connect``)."""

    def __init__(
        self,
        client: Registry,
        credentials: RegistryLogin,
        *,
        placement: Placements = _no_placement,
        connect: Callable[[Placement], Registry] | None = None,
    ) -> None:
        self.client = client
        self.credentials = credentials
        self._placement = placement
        self._connect = connect
        self._outside: dict[Placement, Registry] = {}
        self._outside_lock = Lock()

    @property
    def endpoint(self) -> str:
        """The platform registry's endpoint."""
        return self.client.endpoint

    def registry_of(self, stack: str) -> tuple[Registry, str]:
        """The registry holding ``stack``'s images, and its repository there."""
        return self.registry_in(stack, self._placement(stack))

    def registry_in(self, stack: str, placement: Placement | None) -> tuple[Registry, str]:
        """The registry ``placement`` names (None: the platform's own), and ``stack``'s
        repository there."""
        if placement is None:
            return self.client, stack
        with self._outside_lock:
            client = self._outside.get(placement)
            if client is None:
                if self._connect is None:
                    raise NotFoundError(
                        f"stack {stack} uses registry {placement.registry}, which this "
                        "platform cannot reach (no outside registry client)"
                    )
                client = self._outside[placement] = self._connect(placement)
        return client, placement.repository(stack)

    def pulled_from(self, stack: str, target: TargetPlace) -> tuple[str, RegistryLogin]:
        """Where an engine on ``target`` pulls ``stack``'s images (``host/repository``), and
        the login it pulls with."""
        if target.builtin:
            return self.image_url(stack), self.login(stack)
        if target.placement is None:
            return f"{self.endpoint}/{stack}", self.credentials
        placement = target.placement
        return f"{placement.endpoint}/{placement.repository(stack)}", placement.login

    def pulled_registry(self, stack: str, target: TargetPlace) -> tuple[Registry, str]:
        """The registry an engine on ``target`` pulls ``stack``'s images from, and the
        repository there (``pulled_from``'s, as a client with the platform's login)."""
        if target.builtin:
            return self.registry_of(stack)
        return self.registry_in(stack, target.placement)

    def has_manifest(self, registry: Registry, repository: str, digest: str) -> bool:
        """Whether ``registry`` still holds the manifest ``digest`` (one HEAD, asked once:
        no retries): False on a 404; a registry that does not answer raises at once (it
        is not a "no", and the caller goes on without the answer)."""
        return registry.has_manifest(repository, digest)

    def copy_to(self, stack: str, digest: str, tag: str, placement: Placement | None) -> bool:
        """Copy ``stack``'s image ``digest`` into the registry ``placement`` names (None:
        the platform's own), then point ``tag`` at it there: blobs it has are not sent,
        the manifest (its bytes, so the same digest) goes last, so ``tag`` never names an
        incomplete image and a copy cut short is finished by the next one. False when
        that registry holds the stack's images already (nothing to copy)."""
        home, repository = self.registry_of(stack)
        there, to_repository = self.registry_in(stack, placement)
        if (there.endpoint, to_repository) == (home.endpoint, repository):
            return False
        copied = home.copy(
            repository, digest, to_repository=to_repository, to_reference=tag, target=there
        )
        if copied != digest:
            raise PermanentError(
                f"registry {there.endpoint} stored {to_repository}:{tag} as {copied}, not "
                f"{digest}: it rewrote the manifest"
            )
        return True

    def login(self, stack: str) -> RegistryLogin:
        """The login for ``stack``'s registry: what builds push and engines pull with."""
        placement = self._placement(stack)
        return self.credentials if placement is None else placement.login

    def endpoint_of(self, stack: str) -> str:
        placement = self._placement(stack)
        return self.endpoint if placement is None else placement.endpoint

    def image_url(self, stack: str) -> str:
        client, repository = self.registry_of(stack)
        return f"{client.endpoint}/{repository}"

    def close(self) -> None:
        self.client.close()
        with self._outside_lock:
            outside, self._outside = list(self._outside.values()), {}
        for client in outside:
            client.close()

    def tag_digests(self, stack: str, tags: Iterable[str]) -> dict[str, str]:
        """The digest of each tag that exists; tags (or a repository) that don't are left out."""
        client, repository = self.registry_of(stack)
        found = {}
        for tag in tags:
            try:
                found[tag] = client.resolve(repository, tag)
            except NotFoundError:
                continue
        return found

    def all_tag_digests(self, stack: str) -> dict[str, str]:
        """The digest of every tag of the stack's repository."""
        return self.tag_digests(stack, self.list_tags(stack))

    def digest(self, stack: str, tag: str) -> str:
        client, repository = self.registry_of(stack)
        return client.resolve(repository, tag)

    def retag(self, stack: str, source: str, tag: str) -> str:
        client, repository = self.registry_of(stack)
        return client.retag(repository, source, tag)

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
            self.retag(stack, digest, tag)
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
            client, repository = self.registry_of(stack)
            client.delete_manifest(repository, removal.digest)
            log(f"removed {names}, which the failed build pushed")

    def forget(self, stack: str, *, where: tuple[Registry, str] | None = None) -> int:
        """Delete every manifest of the stack's repository (the stack was deleted; ``where``
        is its ``registry_of``, read before its row went); blobs stay until the
        registry's garbage collection. Returns how many went."""
        client, repository = where or self.registry_of(stack)
        digests = set()
        for tag in self._tags_in(client, repository):
            try:
                digests.add(client.resolve(repository, tag))
            except NotFoundError:
                continue  # removed meanwhile
        for digest in digests:
            client.delete_manifest(repository, digest)
        return len(digests)

    def list_tags(self, stack: str) -> list[str]:
        return self._tags_in(*self.registry_of(stack))

    @staticmethod
    def _tags_in(client: Registry, repository: str) -> list[str]:
        try:
            return client.list_tags(repository)
        except NotFoundError:
            return []

    def images(self, stack: str) -> list[ImageGroup]:
        """Every image of the stack (one per digest) with all the tags that point at it."""
        client, repository = self.registry_of(stack)
        groups: dict[str, list[str]] = {}
        for tag in sorted(self.list_tags(stack)):
            groups.setdefault(client.resolve(repository, tag), []).append(tag)
        images = []
        for digest, tags in groups.items():
            manifest = client.get_manifest(repository, digest)
            images.append(ImageGroup(digest=digest, tags=tags, size=_size(manifest.raw)))
        return images

    def docker_config(
        self, directory: Path, stack: str | None = None, *, also: Iterable[RegistryLogin] = ()
    ) -> Path:
        """A ``DOCKER_CONFIG`` directory whose client is logged in to the platform registry,
        to ``stack``'s outside registry when it has one, and to the registries of ``also``."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / "config.json"
        logins = [self.credentials] + ([self.login(stack)] if stack is not None else [])
        logins += list(also)
        auths = {login.registry: {"auth": login.basic_auth()} for login in logins}
        path.write_text(json.dumps({"auths": auths}), encoding="utf-8")
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
