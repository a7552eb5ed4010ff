"""What auto-dockerize decides, as plain data: the kind of app, the evidence and the files
it came from, the versions chosen and why, warnings, and the Dockerfile text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from stackyard.images.dockerize.versions import Choice

Kind = Literal["fastapi", "flask", "django", "node", "nextjs", "spa", "static", "procfile"]


@dataclass(frozen=True)
class BaseImages:
    """Base image names for generated Dockerfiles (a setting: change them per platform).

    ``python`` and ``node``, when set, replace the image the version table chose (a mirror
    or a pinned digest); ``static`` serves plain static sites and ``spa`` built single-page
    apps.
    """

    python: str | None = None
    node: str | None = None
    static: str = "busybox:latest"
    spa: str = "caddy:2"

    def language(self, choice: Choice) -> str:
        chosen = self.python if choice.version.language == "python" else self.node
        return chosen or choice.version.image


@dataclass(frozen=True)
class Detection:
    """What was detected in a build context, why, how it starts, and the Dockerfile for it."""

    kind: Kind
    evidence: tuple[str, ...]
    command: str
    dockerfile: str
    files: tuple[str, ...] = ()
    versions: tuple[Choice, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "evidence": list(self.evidence),
            "files": list(self.files),
            "versions": [choice.to_dict() for choice in self.versions],
            "warnings": list(self.warnings),
            "command": self.command,
            "dockerfile": self.dockerfile,
        }
