"""Slack incoming webhooks: the message as Block Kit blocks in a coloured attachment.

``payload`` is pure (tests compare it, and check it against Slack's documented limits);
``SlackChannel`` posts it. Slack answers 200 ``ok``; a removed webhook answers 404
``no_service`` or 410, a bad payload 400: those are permanent, 429 and 5xx are retried.
"""

from __future__ import annotations

from typing import Any, ClassVar

from stackyard.channels.base import Channel, Destination, Message, Severity, check_url
from stackyard.channels.posting import Poster, encode

HEADER_MAX = 150  # Slack: a header block's plain_text
SECTION_MAX = 3000  # a section's text
FIELD_MAX = 2000  # one field's text
FIELDS_MAX = 10  # fields in one section

COLOURS = {
    Severity.GOOD: "#2eb67d",
    Severity.BAD: "#e01e5a",
    Severity.WAITING: "#ecb22e",
    Severity.INFO: "#36c5f0",
}


def escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as Slack asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload(message: Message) -> dict[str, Any]:
    """The incoming-webhook body: ``text`` (what a phone notification shows) and blocks."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": clip(message.title, HEADER_MAX)},
        }
    ]
    if message.text:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": clip(escape(message.text), SECTION_MAX)},
            }
        )
    fields = [
        {"type": "mrkdwn", "text": clip(f"*{escape(name)}*\n{escape(value or '-')}", FIELD_MAX)}
        for name, value in message.fields[:FIELDS_MAX]
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if message.link:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"<{message.link}|Open in the Stackyard console>"}
                ],
            }
        )
    return {
        "text": clip(escape(message.title), SECTION_MAX),
        "attachments": [{"color": COLOURS[message.severity], "blocks": blocks}],
    }


class SlackChannel(Channel):
    name: ClassVar[str] = "slack"

    def __init__(self, poster: Poster | None = None) -> None:
        self._poster = poster or Poster()

    def check(self, destination: Destination) -> None:
        check_url(destination.target, "the Slack webhook URL")

    def deliver(self, message: Message, destination: Destination) -> str:
        return self._poster.post(destination.target, encode(payload(message)), {}, "Slack")

    def close(self) -> None:
        self._poster.close()
