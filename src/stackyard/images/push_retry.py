"""Which failed pushes are worth sending again: the registry refuses them only for now.

The platform's own pushes (DockerBuilder) and a build's pushes through the build proxy
both wait out a registry that is read-only for its garbage collection, or restarting.
"""

from __future__ import annotations

import re

PUSH_RETRY_FOR = 120.0  # seconds a push waits out a read-only or restarting registry

# What the engine says when the registry refuses a push for now: a read-only registry
# (405 with a plain-text body), one that is restarting, or a 5xx. And "blob unknown to
# registry" for the manifest of a push that spanned a garbage collection: its layers went
# up before the registry turned read-only, its manifest after, and the collection removed
# the layers no manifest named yet. Pushed again, the engine asks for each layer (HEAD)
# and sends the missing ones again.
_LATER = re.compile(
    r"HTTP 405|405 Method Not Allowed|connection refused|connection reset by peer|"
    r"unexpected EOF|status: 50[234]|HTTP 50[234]|50[234] (Bad Gateway|Service Unavailable)|"
    r"blob unknown to registry",
    re.IGNORECASE,
)


def push_may_succeed_later(message: str) -> bool:
    """Whether a failed push is worth trying again soon (see ``_LATER``); a refused login,
    a denied repository or a missing image is not."""
    return bool(_LATER.search(message))
