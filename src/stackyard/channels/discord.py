"""Discord webhooks: the message as one embed, with no mention allowed to ping anyone.

``payload`` is pure; ``DiscordChannel`` posts it. Discord answers 204 (200 with
``?wait=true``); 429 carries ``retry_after``, which the delivery worker honours.
"""

from __future__ import annotations

from typing import Any, ClassVar

from stackyard.channels.base import Channel, Destination, Message, Severity, check_url
from stackyard.channels.posting import Poster, encode
from stackyard.channels.slack import clip

TITLE_MAX = 256  # Discord: an embed's title, a field's name
DESCRIPTION_MAX = 4096
VALUE_MAX = 1024  # a field's value
FIELDS_MAX = 25

COLOURS = {
    Severity.GOOD: 0x2EB67D,
    Severity.BAD: 0xE01E5A,
    Severity.WAITING: 0xECB22E,
    Severity.INFO: 0x36C5F0,
}


def payload(message: Message) -> dict[str, Any]:
    """The execute-webhook body: one embed; ``allowed_mentions`` empty so that text from
    an app (a failure reason) can never ping @everyone."""
    embed: dict[str, Any] = {
        "title": clip(message.title, TITLE_MAX),
        "color": COLOURS[message.severity],
        "fields": [
            {"name": clip(name, TITLE_MAX), "value": clip(value or "-", VALUE_MAX), "inline": True}
            for name, value in message.fields[:FIELDS_MAX]
        ],
        "footer": {"text": f"Stackyard · {message.event}"},
    }
    if message.text:
        embed["description"] = clip(message.text, DESCRIPTION_MAX)
    if message.link:
        embed["url"] = message.link
    if message.at is not None:
        embed["timestamp"] = message.at.isoformat()
    return {"username": "Stackyard", "allowed_mentions": {"parse": []}, "embeds": [embed]}


class DiscordChannel(Channel):
    name: ClassVar[str] = "discord"

    def __init__(self, poster: Poster | None = None) -> None:
        self._poster = poster or Poster()

    def check(self, destination: Destination) -> None:
        check_url(destination.target, "the Discord webhook URL")

    def deliver(self, message: Message, destination: Destination) -> str:
        return self._poster.post(destination.target, encode(payload(message)), {}, "Discord")

    def close(self) -> None:
        self._poster.close()
