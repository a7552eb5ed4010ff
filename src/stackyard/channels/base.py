"""The Channel seam: deliver one notification message to one destination.

A channel turns a ``Message`` (plain data: what happened, to which stack and stage, the
link to the console) into what its receiver expects, and sends it. It says how a try
ended by raising: ``RetryableError`` (refused, timed out, 5xx, 429: the delivery worker
tries again later; ``RateLimited`` carries the receiver's own wait) or ``PermanentError``
(the receiver refused the message or the credentials: trying again cannot help). The
delivery worker (notify/delivery.py) masks every secret before a message gets here.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from stackyard.errors import RetryableError, UsageError

TIMEOUT = 10.0
"""Seconds a receiver has to answer one try (connect, send, answer)."""


class Severity(StrEnum):
    """How a message reads at a glance: a colour in Slack and Discord."""

    GOOD = "good"  # a deployment completed
    BAD = "bad"  # something failed
    WAITING = "waiting"  # someone must act: an approval
    INFO = "info"  # a task replaced, a test


@dataclass(frozen=True)
class Message:
    """One notification, ready to send: every secret already masked."""

    event: str  # the event kind: approval, completed, rolled-back, ...
    stack: str
    stage: str  # "" when the event is the stack's (a build)
    title: str  # one line
    text: str  # a short paragraph
    fields: tuple[tuple[str, str], ...] = ()  # name -> value, in order
    link: str = ""  # the console page, absolute; "" when none
    severity: Severity = Severity.INFO
    event_id: int = 0
    delivery_id: int = 0
    at: datetime | None = None  # when the event happened


SmtpSecurity = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    security: SmtpSecurity = "starttls"
    username: str = ""
    password: str = ""
    sender: str = "stackyard@localhost"


@dataclass(frozen=True)
class Destination:
    """Where one channel delivers: ``target`` is the webhook URL (a secret) or the email
    address; ``secret`` signs a generic webhook's body; ``smtp`` is the mail server."""

    target: str
    secret: str = ""
    smtp: SmtpServer | None = None


class RateLimited(RetryableError):
    """The receiver asked to wait ``retry_after`` seconds before the next try (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Channel(ABC):
    """Delivers messages of one kind (slack, discord, webhook, email)."""

    name: ClassVar[str]
    needs_secret: ClassVar[bool] = False  # a signing secret is made per channel

    @abstractmethod
    def check(self, destination: Destination) -> None:
        """UsageError naming the problem when ``destination`` cannot be delivered to."""

    @abstractmethod
    def deliver(self, message: Message, destination: Destination) -> str:
        """Send ``message``; a short account of the answer ("HTTP 200"), or an error."""

    def close(self) -> None:  # noqa: B027 (optional: most channels hold nothing)
        """Release connections; the channel is not used again."""


# -- rules every channel applies to where it sends


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> tuple[str, int]:
    """A receiver's URL: https anywhere, plain http on the loopback only (a URL with a
    token in it, and every message, would cross the network in the clear). (host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(
            f"{what}: not an http(s) URL with a host name",
            hint="give the full URL the service shows, e.g. https://hooks.slack.com/services/...",
        )
    if parts.username or parts.password:
        raise UsageError(f"{what}: the URL carries a user name or password; remove them")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UsageError(f"{what}: the URL's port is not a number from 1 to 65535") from exc
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError(
            f"{what}: plain http is allowed for a receiver on this machine (127.0.0.1) only",
            hint="use the https URL: the URL and every message would otherwise travel in clear",
        )
    return parts.hostname, port


def refuse_platform_endpoint(
    host: str, port: int, platform: Iterable[tuple[str, int]], what: str
) -> None:
    """Refuse a receiver that is one of the platform's own endpoints (its API, registry,
    router admin): a notification must not be a way to send requests to them."""
    for own_host, own_port in platform:
        same_host = host == own_host or (is_loopback(host) and is_loopback(own_host))
        if port == own_port and same_host:
            raise UsageError(
                f"{what}: {host}:{port} is one of the platform's own endpoints",
                hint="notifications go to receivers outside the platform",
            )
