"""The image reference grammar: ``[registry/]repository[:tag][@digest]``, as Docker reads it.

Used by the registry client and by whatever takes an image name from a user or a spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackyard.errors import UsageError

# The reference grammar of CNCF distribution (reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")


def is_digest(reference: str) -> bool:
    return _DIGEST.fullmatch(reference) is not None


def is_repository(path: str) -> bool:
    """A repository path (or a namespace of one): lower-case components joined by ``/``."""
    return _REPOSITORY.fullmatch(path) is not None


def is_host(endpoint: str) -> bool:
    """``host[:port]`` as a registry endpoint is written: a DNS name or [IPv6], then a port."""
    return _HOST.fullmatch(endpoint) is not None


@dataclass(frozen=True)
class ManifestRef:
    """A manifest inside one registry: a repository and a tag or digest."""

    repository: str
    reference: str

    def __str__(self) -> str:
        sep = "@" if is_digest(self.reference) else ":"
        return f"{self.repository}{sep}{self.reference}"


@dataclass(frozen=True)
class ImageReference:
    """``[registry/]repository[:tag][@digest]``, validated like Docker does."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """The digest when there is one (it pins the image), else the tag, else latest."""
        return self.digest or self.tag or "latest"

    @property
    def manifest_ref(self) -> ManifestRef:
        return ManifestRef(self.repository, self.reference)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """Parse an image reference; a bad one raises UsageError naming the bad part."""
        if not text or text != text.strip():
            raise UsageError(f"bad image reference {text!r}: it is empty or has spaces")
        name, digest = text, None
        if "@" in text:
            name, _, digest = text.partition("@")
            if not is_digest(digest):
                raise UsageError(
                    f"bad image reference {text!r}: digest {digest!r} is not algorithm:hex",
                    hint="a digest looks like sha256:<64 hex characters>",
                )
        registry, path = None, name
        first, slash, rest = name.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
            if not is_host(registry):
                raise UsageError(f"bad image reference {text!r}: registry host {registry!r}")
        tag = None
        last_slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > last_slash:
            path, tag = path[:colon], path[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise UsageError(
                    f"bad image reference {text!r}: tag {tag!r} is not valid",
                    hint="a tag is up to 128 letters, digits, '_', '.' or '-', not starting "
                    "with '.' or '-'",
                )
        if not _REPOSITORY.fullmatch(path):
            raise UsageError(
                f"bad image reference {text!r}: repository {path!r} is not valid",
                hint="a repository is lower-case letters, digits and separators (. _ - /)",
            )
        return cls(registry, path, tag, digest)
