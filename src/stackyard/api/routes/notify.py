"""``/api/v1/stacks/{name}/notify``: a stack's notification channels, a test, what was sent.

A channel's URL and SMTP password go in and never come out: the list shows URLs masked,
and a webhook channel's signing secret is in the answer that adds it, once.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from stackyard.api.routes.builds import services
from stackyard.channels.base import SmtpServer
from stackyard.channels.mail import DEFAULT_PORTS
from stackyard.notify.channels import ChannelView, NewChannel
from stackyard.notify.events import DESCRIPTIONS, parse_events
from stackyard.notify.service import DeliveryView, NotifyService, TestReport

router = APIRouter(prefix="/stacks/{name}/notify", tags=["notifications"])


class SmtpBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str
    port: int | None = Field(default=None, ge=1, le=65535)  # by security: 587, 465, 25
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: str = Field(default="", repr=False)
    sender: str = "stackyard@localhost"


class ChannelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str  # slack, discord, webhook, email
    target: str = Field(repr=False)  # the webhook URL (a secret), or the email address
    events: list[str] = Field(default_factory=list)  # empty: every event
    smtp: SmtpBody | None = None


class ChannelList(BaseModel):
    stack: str
    channels: list[ChannelView]
    events: dict[str, str]  # every event a channel can subscribe to, and what it is


class DeliveryList(BaseModel):
    stack: str
    deliveries: list[DeliveryView]


def notify(request: Request) -> NotifyService:
    found: NotifyService = services(request).notify
    return found


@router.get("")
def list_channels(name: str, request: Request) -> ChannelList:
    return ChannelList(
        stack=name,
        channels=notify(request).list_channels(name),
        events={str(kind): text for kind, text in DESCRIPTIONS.items()},
    )


@router.post("", status_code=201)
def add_channel(name: str, body: ChannelBody, request: Request) -> ChannelView:
    smtp = None
    if body.smtp is not None:
        s = body.smtp
        port = s.port or DEFAULT_PORTS[s.security]
        smtp = SmtpServer(s.host, port, s.security, s.username, s.password, s.sender)
    new = NewChannel(body.kind, body.target, parse_events(body.events), smtp)
    return notify(request).add(name, new)


@router.delete("/{number}")
def remove_channel(name: str, number: int, request: Request) -> ChannelView:
    return notify(request).remove(name, number)


@router.post("/test")
def test_channels(name: str, request: Request) -> TestReport:
    """A test event to every channel; waits up to 20 s for each one's first try."""
    return notify(request).test(name)


@router.get("/deliveries")
def list_deliveries(name: str, request: Request, limit: int = 50) -> DeliveryList:
    return DeliveryList(
        stack=name, deliveries=notify(request).deliveries(name, min(max(limit, 1), 500))
    )
