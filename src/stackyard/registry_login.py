"""The one record of a registry login: which registry, as which user, with which password.

Every layer may import it (it imports nothing of Stackyard): the platform makes it from its
credentials file, the image store pushes and retags with it, a build or release spec gets it
as ``DOCKER_CONFIG``, and the engine pulls a task's image with it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials for one registry; the password never shows in a repr or a log."""

    registry: str  # host[:port], as image references name it
    username: str
    password: str = field(repr=False)

    def basic_auth(self) -> str:
        """``base64(username:password)``: HTTP Basic, and the ``auth`` of a Docker config."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")

    def docker_config(self) -> dict[str, object]:
        """The ``config.json`` a Docker client reads from ``DOCKER_CONFIG`` to log in here."""
        return {"auths": {self.registry: {"auth": self.basic_auth()}}}
