"""A generic webhook: the message as JSON, signed like GitHub signs its webhooks.

``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`` with the channel's own
secret (made when the channel is added, shown once), the same scheme the platform checks on
the webhooks it receives. ``X-Stackyard-Delivery`` names the delivery: a receiver that got
it twice (a retry after a lost answer) can tell.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

from stackyard.channels.base import Channel, Destination, Message, check_url
from stackyard.channels.posting import Poster, encode
from stackyard.errors import UsageError

SIGNATURE_HEADER = "X-Hub-Signature-256"


def payload(message: Message) -> dict[str, Any]:
    return {
        "event": message.event,
        "id": message.event_id,
        "delivery": message.delivery_id,
        "stack": message.stack,
        "stage": message.stage,
        "title": message.title,
        "text": message.text,
        "fields": dict(message.fields),
        "link": message.link,
        "severity": str(message.severity),
        "at": message.at.isoformat() if message.at else None,
    }


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel(Channel):
    name: ClassVar[str] = "webhook"
    needs_secret: ClassVar[bool] = True

    def __init__(self, poster: Poster | None = None) -> None:
        self._poster = poster or Poster()

    def check(self, destination: Destination) -> None:
        check_url(destination.target, "the webhook URL")
        if not destination.secret:
            raise UsageError("a webhook channel needs its signing secret")

    def deliver(self, message: Message, destination: Destination) -> str:
        body = encode(payload(message))
        headers = {
            SIGNATURE_HEADER: signature(destination.secret, body),
            "X-Stackyard-Event": message.event,
            "X-Stackyard-Delivery": str(message.delivery_id),
        }
        return self._poster.post(destination.target, body, headers, "the webhook")

    def close(self) -> None:
        self._poster.close()
