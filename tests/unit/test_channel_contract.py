"""The Channel seam's contract, run against ``FakeChannel`` and the real webhook channel
(posting to a real receiver on the loopback): a message that gets through is received; a
receiver that fails for now makes a retryable error; one that refuses, a permanent one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from stackyard.channels.base import Channel, Destination, Message
from stackyard.channels.fake import FakeChannel
from stackyard.channels.webhook import WebhookChannel
from stackyard.errors import StackyardError
from tests.receivers import HttpReceiver

MESSAGE = Message(event="test", stack="shop", stage="", title="a test", text="hello")


@dataclass
class Under:
    channel: Channel
    destination: Destination
    fail_for_now: Callable[[], None]
    refuse: Callable[[], None]
    received: Callable[[], list[str]]  # the titles the receiver got


def fake() -> Iterator[Under]:
    channel = FakeChannel()

    def fail_for_now() -> None:
        channel.fail_next = 1

    def refuse() -> None:
        channel.refuse = True

    yield Under(
        channel,
        Destination("https://fake.example.com/hook"),
        fail_for_now,
        refuse,
        lambda: [m.title for m, _ in channel.sent],
    )


def webhook() -> Iterator[Under]:
    receiver = HttpReceiver().start()
    channel = WebhookChannel()

    def fail_for_now() -> None:
        receiver.script.fail_next = 1

    def refuse() -> None:
        receiver.script.status = 404

    try:
        yield Under(
            channel,
            Destination(receiver.url("/hook"), secret="s3cret"),
            fail_for_now,
            refuse,
            lambda: [
                r.json()["title"]
                for r, status in zip(receiver.received, receiver.answers, strict=True)
                if status < 300
            ],
        )
    finally:
        channel.close()
        receiver.stop()


@pytest.fixture(params=[fake, webhook], ids=["fake", "webhook"])
def under(request: pytest.FixtureRequest) -> Iterator[Under]:
    yield from request.param()


def test_a_delivered_message_is_received(under: Under) -> None:
    under.channel.check(under.destination)
    assert under.channel.deliver(MESSAGE, under.destination) == "HTTP 200"
    assert under.received() == ["a test"]


def test_a_receiver_failing_for_now_is_a_retryable_error(under: Under) -> None:
    under.fail_for_now()
    with pytest.raises(StackyardError) as failed:
        under.channel.deliver(MESSAGE, under.destination)
    assert failed.value.retryable
    under.channel.deliver(MESSAGE, under.destination)  # the next try gets through


def test_a_refusing_receiver_is_a_permanent_error(under: Under) -> None:
    under.refuse()
    with pytest.raises(StackyardError, match="HTTP 404") as refused:
        under.channel.deliver(MESSAGE, under.destination)
    assert not refused.value.retryable
