"""The image a build made, read from the engine's answer to ``POST /build`` as it passes on
to the client (the proxy's server feeds it): an image with no name is the stack's only when
one of this build's own ``docker build``s made it (``rules.ownership``)."""

from __future__ import annotations

import json
import re

_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
_LONGEST = 64 * 1024  # a message longer than this is a step's output, never the result


class BuiltImage:
    """The id of the image one build made, from its JSON messages (one per line).

    The engine names it in an ``aux`` message (``{"aux": {"ID": "sha256:…"}}``, the legacy
    builder's and BuildKit's ``moby.image.id``), which a RUN step cannot forge: a step's
    output travels inside ``stream`` strings. A quiet legacy build (``q=1``) that succeeds
    sends one message only, ``{"stream": "sha256:…\\n"}``; a failed one prints its steps'
    output (which may be any text) and an error, so then nothing is taken."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self._pending = b""
        self._messages = 0
        self._aux: str | None = None
        self._quiet_id: str | None = None
        self._failed = False
        self._skipping = False

    def feed(self, data: bytes) -> None:
        if self._skipping:  # the rest of a message too long to be the result
            _, newline, data = data.partition(b"\n")
            if not newline:
                return
            self._skipping = False
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self._read(line)
        if len(self._pending) > _LONGEST:
            self._pending, self._skipping = b"", True
            self._messages += 1

    @property
    def image(self) -> str | None:
        """The image's id, once the answer has ended; None when the build named none or
        failed."""
        if self._pending.strip():
            self._read(self._pending)
            self._pending = b""
        if self._failed:
            return None
        if self._aux is not None:
            return self._aux
        return self._quiet_id if self.quiet and self._messages == 1 else None

    def _read(self, line: bytes) -> None:
        if not line.strip():
            return
        self._messages += 1
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("error") or message.get("errorDetail"):
            self._failed = True
        aux = message.get("aux")
        if isinstance(aux, dict) and _IMAGE_ID.fullmatch(str(aux.get("ID", ""))):
            self._aux = str(aux["ID"])
        stream = message.get("stream")
        if self._messages == 1 and isinstance(stream, str) and _IMAGE_ID.fullmatch(stream.strip()):
            self._quiet_id = stream.strip()
