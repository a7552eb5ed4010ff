"""Streamed masking of secret values in build output, for the screen and the log file.

A secret is replaced by ``***`` wherever it appears, also inside other text and when it is
printed split across lines (``fold``). Only a tail that could begin a secret is held back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_BREAKS = "\r\n"


class SecretMasker:
    """Feed it output text in pieces; it returns the same text with every secret masked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._first_chars = {s[0] for s in self._secrets}
        self._pattern = _secret_pattern(self._secrets)
        self._held = ""

    def feed(self, text: str) -> str:
        """Masked text that is safe to show now; a possible start of a secret is kept back."""
        if self._pattern is None:
            return text
        return self._drain(self._held + text, final=False)

    def flush(self) -> str:
        """Everything still held back, masked. Call at the end of each command's output."""
        if self._pattern is None:
            return ""
        return self._drain(self._held, final=True)

    def mask(self, text: str) -> str:
        """Mask one complete piece of text (a command line, a message) on its own."""
        if self._pattern is None:
            return text
        return self._pattern.sub(_masked, text)

    def _drain(self, buffer: str, *, final: bool) -> str:
        if self._pattern is None:
            return buffer
        out: list[str] = []
        pos = 0
        while True:
            hold = len(buffer) if final else self._partial_start(buffer, pos)
            match = self._pattern.search(buffer, pos)
            if match is None or match.start() >= hold:
                out.append(buffer[pos:hold])
                pos = hold
                break
            out.append(buffer[pos : match.start()])
            out.append(_masked(match))
            pos = match.end()
        self._held = buffer[pos:]
        return "".join(out)

    def _partial_start(self, buffer: str, start: int) -> int:
        """Where the shortest tail of ``buffer`` that could still grow into a secret begins."""
        longest = 3 * len(self._secrets[0])
        for i in range(max(start, len(buffer) - longest), len(buffer)):
            if buffer[i] in self._first_chars and self._could_begin(buffer, i):
                return i
        return len(buffer)

    def _could_begin(self, buffer: str, i: int) -> bool:
        return any(_is_prefix(buffer, i, secret) for secret in self._secrets)


def _is_prefix(buffer: str, i: int, secret: str) -> bool:
    """Whether buffer[i:] is the start of ``secret``, allowing line breaks between its chars."""
    k = 0
    for char in buffer[i:]:
        if k == len(secret):
            return False
        if char in _BREAKS and k > 0:
            continue
        if char != secret[k]:
            return False
        k += 1
    return True


def _secret_pattern(secrets: list[str]) -> re.Pattern[str] | None:
    if not secrets:
        return None
    between = r"(?:\r?\n)?"
    return re.compile("|".join(between.join(re.escape(c) for c in s) for s in secrets))


def _masked(match: re.Match[str]) -> str:
    """``***`` for each line the secret was spread over, keeping the line breaks."""
    pieces = re.split(r"(\r?\n)", match.group(0))
    return "".join(piece if piece in ("\n", "\r\n") else MASK for piece in pieces)
