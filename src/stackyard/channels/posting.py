"""POST one JSON body to a receiver, and say how it went in the seam's error terms.

Slack, Discord and the generic webhook share this: one ``httpx.Client`` per channel (kept
alive between messages), no redirects followed (a redirect could point anywhere, the
platform's own endpoints included), every answer turned into a result or an error that
says whether a retry may help. An error never quotes the URL: it may hold a token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from stackyard import __version__
from stackyard.channels.base import TIMEOUT, RateLimited
from stackyard.errors import PermanentError, RetryableError

USER_AGENT = f"Stackyard/{__version__} (notifications)"
BODY_SHOWN = 200  # characters of a refusal's body kept in the attempt's record
RETRY_AFTER_CAP = 3600.0


class Poster:
    """A kept-alive HTTP client, made on first use; thread-safe like httpx's own."""

    def __init__(self, timeout: float = TIMEOUT, transport: httpx.BaseTransport | None = None):
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], what: str) -> str:
        """POST ``body``; "HTTP <status>" on a 2xx, else RetryableError or PermanentError."""
        try:
            answer = self._http().post(
                url,
                content=body,
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            )
        except httpx.TimeoutException as exc:
            raise RetryableError(
                f"{what} did not answer within {self._timeout:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{what} could not be reached: {_reason(exc)}") from exc
        return judge(answer, what)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self._timeout,
                    follow_redirects=False,
                    transport=self._transport,
                    trust_env=False,  # never through a proxy the environment names
                )
            return self._client


def judge(answer: httpx.Response, what: str) -> str:
    """A receiver's answer as the seam sees it."""
    status = answer.status_code
    if 200 <= status < 300:
        return f"HTTP {status}"
    said = _body(answer)
    if status == 429:
        wait = retry_after(answer)
        raise RateLimited(f"{what} is rate limiting (HTTP 429); wait {wait:g} s", retry_after=wait)
    if 300 <= status < 400:
        raise PermanentError(
            f"{what} answered with a redirect (HTTP {status}), which is not followed",
            hint="give the URL the redirect leads to",
        )
    if status == 408 or status >= 500:
        raise RetryableError(f"{what} answered HTTP {status}{said}")
    raise PermanentError(
        f"{what} refused the message: HTTP {status}{said}",
        hint="check the channel's URL (`stackyard notify list`), or add it again",
    )


def retry_after(answer: httpx.Response) -> float:
    """Seconds to wait: the ``Retry-After`` header, or Discord's ``retry_after`` field."""
    header = answer.headers.get("retry-after", "")
    try:
        seconds = float(header)
    except ValueError:
        seconds = 0.0
    if not seconds:
        try:
            found = answer.json().get("retry_after", 0)
            seconds = float(found) if isinstance(found, int | float) else 0.0
        except (ValueError, AttributeError):
            seconds = 0.0
    return min(max(seconds, 1.0), RETRY_AFTER_CAP)


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _body(answer: httpx.Response) -> str:
    text = " ".join(answer.text.split())[:BODY_SHOWN]
    return f": {text}" if text else ""


def _reason(exc: httpx.TransportError) -> str:
    """The cause without the URL httpx may put in its message."""
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc) or type(exc).__name__
    request = getattr(exc, "_request", None)
    if request is not None:
        text = text.replace(str(request.url), "<url>")
    return text
