"""What each channel sends, by equality, and checked against the receiver's documented rules:
Slack's incoming-webhook body (Block Kit limits), Discord's execute-webhook body (embed
limits), the generic webhook's signature (checked with the platform's own verifier of
incoming webhooks) and the mail an email channel composes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from stackyard.api.routes.hooks import github_signature_ok
from stackyard.channels import discord, slack, webhook
from stackyard.channels.base import Message, Severity
from stackyard.channels.mail import compose
from stackyard.channels.posting import encode

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
MESSAGE = Message(
    event="rolled-back",
    stack="shop",
    stage="prod",
    title="shop/prod: deployment 4 FAILED; rolled back to release 6",
    text="task sy-shop-prod-r7-ab12 exited with status 3; last log lines: <boom> & more",
    fields=(("Stack", "shop"), ("Back to digest", "sha256:" + "1" * 64), ("Trigger", "")),
    link="https://yard.example.com/ui/stacks/shop",
    severity=Severity.BAD,
    event_id=12,
    delivery_id=30,
    at=AT,
)


# -- Slack: https://api.slack.com/messaging/webhooks and the Block Kit reference


def slack_problems(body: dict[str, Any]) -> list[str]:
    """Where ``body`` breaks the rules Slack documents for an incoming-webhook message."""
    problems = []
    if not isinstance(body.get("text"), str) or not body["text"]:
        problems.append("no top-level text (the notification's fallback)")
    for attachment in body.get("attachments", []):
        if not re.fullmatch(r"#[0-9a-f]{6}", attachment.get("color", "")):
            problems.append(f"colour {attachment.get('color')!r}")
        blocks = attachment.get("blocks", [])
        if not 0 < len(blocks) <= 50:
            problems.append("an attachment needs 1 to 50 blocks")
        for block in blocks:
            problems += _slack_block(block)
    return problems


def _slack_text(obj: dict[str, Any], limit: int, kinds: tuple[str, ...]) -> list[str]:
    if obj.get("type") not in kinds:
        return [f"text type {obj.get('type')!r} where {kinds} is allowed"]
    text = obj.get("text", "")
    if not 0 < len(text) <= limit:
        return [f"text of {len(text)} characters (1 to {limit})"]
    if obj["type"] == "mrkdwn" and re.search(
        r"&(?!amp;|lt;|gt;)|<(?!https?://[^|>]+\|[^>]+>)", text
    ):
        return [f"unescaped control characters in {text[:40]!r}"]
    return []


def _slack_block(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        return _slack_text(block["text"], 150, ("plain_text",))
    if kind == "section":
        if "text" in block:
            return _slack_text(block["text"], 3000, ("mrkdwn", "plain_text"))
        fields = block.get("fields", [])
        if not 0 < len(fields) <= 10:
            return [f"a section with {len(fields)} fields (1 to 10)"]
        return [p for f in fields for p in _slack_text(f, 2000, ("mrkdwn", "plain_text"))]
    if kind == "context":
        elements = block.get("elements", [])
        if not 0 < len(elements) <= 10:
            return ["a context needs 1 to 10 elements"]
        return [p for e in elements for p in _slack_text(e, 3000, ("mrkdwn", "plain_text"))]
    return [f"block type {kind!r}"]


def test_slack_gets_blocks_in_a_coloured_attachment_with_its_text_escaped() -> None:
    body = slack.payload(MESSAGE)
    assert body == {
        "text": "shop/prod: deployment 4 FAILED; rolled back to release 6",
        "attachments": [
            {
                "color": "#e01e5a",
                "blocks": [
                    {
                        "type": "header",
                        "text": {"type": "plain_text", "text": MESSAGE.title},
                    },
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": "task sy-shop-prod-r7-ab12 exited with status 3; last log "
                            "lines: &lt;boom&gt; &amp; more",
                        },
                    },
                    {
                        "type": "section",
                        "fields": [
                            {"type": "mrkdwn", "text": "*Stack*\nshop"},
                            {"type": "mrkdwn", "text": "*Back to digest*\nsha256:" + "1" * 64},
                            {"type": "mrkdwn", "text": "*Trigger*\n-"},
                        ],
                    },
                    {
                        "type": "context",
                        "elements": [
                            {
                                "type": "mrkdwn",
                                "text": "<https://yard.example.com/ui/stacks/shop|"
                                "Open in the Stackyard console>",
                            }
                        ],
                    },
                ],
            }
        ],
    }
    assert slack_problems(body) == []


def test_slack_clips_what_is_over_its_limits() -> None:
    long = Message(
        event="failed",
        stack="shop",
        stage="dev",
        title="t" * 400,
        text="x" * 5000,
        fields=tuple((f"F{i}", "v" * 3000) for i in range(14)),
    )
    body = slack.payload(long)
    assert slack_problems(body) == []
    header = body["attachments"][0]["blocks"][0]["text"]["text"]
    assert len(header) == 150
    assert header.endswith("…")
    assert "link" not in json.dumps(body)


# -- Discord: https://discord.com/developers/docs/resources/webhook#execute-webhook


def discord_problems(body: dict[str, Any]) -> list[str]:
    problems = []
    if not body.get("content") and not body.get("embeds"):
        problems.append("neither content nor embeds")
    username = body.get("username", "")
    if not 0 < len(username) <= 80 or "discord" in username.lower():
        problems.append(f"username {username!r}")
    if body.get("allowed_mentions") != {"parse": []}:
        problems.append("mentions allowed: text from an app could ping @everyone")
    embeds = body.get("embeds", [])
    if len(embeds) > 10:
        problems.append("more than 10 embeds")
    for embed in embeds:
        total = len(embed.get("title", "")) + len(embed.get("description", ""))
        total += len(embed.get("footer", {}).get("text", ""))
        if len(embed.get("title", "")) > 256 or len(embed.get("description", "")) > 4096:
            problems.append("title or description too long")
        if not 0 <= embed.get("color", 0) <= 0xFFFFFF:
            problems.append("colour")
        if "url" in embed and not embed["url"].startswith(("http://", "https://")):
            problems.append("url")
        if "timestamp" in embed:
            datetime.fromisoformat(embed["timestamp"])
        fields = embed.get("fields", [])
        if len(fields) > 25:
            problems.append("more than 25 fields")
        for f in fields:
            if not 0 < len(f["name"]) <= 256 or not 0 < len(f["value"]) <= 1024:
                problems.append(f"field {f['name'][:20]!r}")
            total += len(f["name"]) + len(f["value"])
        if total > 6000:
            problems.append(f"{total} characters in one embed (6000 at most)")
    return problems


def test_discord_gets_one_embed_and_mentions_nobody() -> None:
    body = discord.payload(MESSAGE)
    assert body == {
        "username": "Stackyard",
        "allowed_mentions": {"parse": []},
        "embeds": [
            {
                "title": MESSAGE.title,
                "description": MESSAGE.text,
                "url": MESSAGE.link,
                "color": 0xE01E5A,
                "timestamp": "2026-03-01T12:30:00+00:00",
                "footer": {"text": "Stackyard · rolled-back"},
                "fields": [
                    {"name": "Stack", "value": "shop", "inline": True},
                    {"name": "Back to digest", "value": "sha256:" + "1" * 64, "inline": True},
                    {"name": "Trigger", "value": "-", "inline": True},
                ],
            }
        ],
    }
    assert discord_problems(body) == []


def test_discord_clips_what_is_over_its_limits() -> None:
    long = Message(
        event="failed",
        stack="shop",
        stage="dev",
        title="t" * 400,
        text="x" * 3000,
        fields=tuple((f"F{i}", "v" * 300) for i in range(8)),
    )
    body = discord.payload(long)
    assert discord_problems(body) == []
    assert len(body["embeds"][0]["title"]) == 256


# -- the generic webhook


def test_the_webhook_body_is_signed_like_the_webhooks_the_platform_receives() -> None:
    body = encode(webhook.payload(MESSAGE))
    signature = webhook.signature("s3cret", body)
    assert github_signature_ok("s3cret", body, signature)
    assert not github_signature_ok("other", body, signature)
    assert json.loads(body) == {
        "event": "rolled-back",
        "id": 12,
        "delivery": 30,
        "stack": "shop",
        "stage": "prod",
        "title": MESSAGE.title,
        "text": MESSAGE.text,
        "fields": {"Stack": "shop", "Back to digest": "sha256:" + "1" * 64, "Trigger": ""},
        "link": MESSAGE.link,
        "severity": "bad",
        "at": "2026-03-01T12:30:00+00:00",
    }


# -- email


def test_an_email_is_plain_text_with_a_subject_that_cannot_carry_headers() -> None:
    sneaky = Message(
        event="build-failed",
        stack="shop",
        stage="",
        title="shop: build 9 FAILED\r\nBcc: everyone@example.com",
        text="exit status 2",
        fields=(("Build", "9"), ("Log", "stackyard logs shop --build 9")),
        link="http://127.0.0.1:7878/ui/stacks/shop",
        at=AT,
    )
    mail = compose(sneaky, "ops@example.com", "stackyard@example.com")
    assert mail["Subject"] == "[stackyard] shop: build 9 FAILED Bcc: everyone@example.com"
    assert mail["Bcc"] is None
    assert mail["To"] == "ops@example.com"
    assert mail["X-Stackyard-Event"] == "build-failed"
    assert mail.get_content() == (
        "exit status 2\n"
        "\n"
        "Build: 9\n"
        "Log:   stackyard logs shop --build 9\n"
        "\n"
        "http://127.0.0.1:7878/ui/stacks/shop\n"
        "\n"
        "-- \n"
        "Stackyard notification: build-failed, stack shop\n"
    )
