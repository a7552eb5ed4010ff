"""The delivery worker against real receivers on the loopback: an HTTP server standing in
for Slack, Discord and a generic webhook, and an SMTP sink (aiosmtpd). A real SQLite store
and the real secret store; nothing between the worker and the receivers is faked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from stackyard.api.routes.hooks import github_signature_ok
from stackyard.channels.base import SmtpServer
from stackyard.notify.channels import ChannelKinds, ChannelRecords, ChannelView, NewChannel
from stackyard.notify.delivery import DeliveryWorker, WorkerSettings
from stackyard.notify.events import (
    DeploymentFacts,
    EventKind,
    Notice,
    parse_events,
    rolled_back,
)
from stackyard.notify.outbox import Outbox
from stackyard.notify.retry import RetryPolicy
from stackyard.secrets.sql import SqlSecretStore
from stackyard.secrets.vault import Vault, key_file
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import (
    NotificationAttempt,
    NotificationDelivery,
    NotificationEvent,
    Stack,
)
from tests.receivers import HttpReceiver, SmtpSink, eventually, free_port, http_receiver
from tests.unit.test_notify_payloads import discord_problems, slack_problems

STACK = "shop"
DIGEST = "sha256:" + "1" * 64
FAST = RetryPolicy(first=0.2, factor=2, longest=2, attempts=4)
CONSOLE = "https://yard.example.com"
PLATFORM_API = ("127.0.0.1", 7878)


class Notifications:
    """One stack, its channels, the outbox, and delivery workers made on demand."""

    def __init__(self, tmp: Path) -> None:
        self.database = open_database(f"sqlite:///{tmp / 'stackyard.db'}")
        migrate(self.database)
        self.sessions = session_factory(self.database)
        self.db_file = tmp / "stackyard.db"
        with self.sessions.begin() as session:
            session.add(Stack(name=STACK, repo="https://example.invalid/shop.git"))
        self.secrets = SqlSecretStore(
            self.sessions,
            Vault(lambda: key_file(tmp / "secrets.key")),
            platform_secrets=["registry-password"],
        )
        self.channels = ChannelRecords(
            self.sessions, self.secrets, ChannelKinds(), platform_endpoints=(PLATFORM_API,)
        )
        self.outbox = Outbox()
        self.workers: list[DeliveryWorker] = []

    def worker(self, policy: RetryPolicy = FAST) -> DeliveryWorker:
        worker = DeliveryWorker(
            self.sessions,
            self.channels,
            ChannelKinds(),
            mask_values=self.secrets.mask_values,
            settings=WorkerSettings(policy=policy, console_url=CONSOLE, idle=5),
        )
        self.workers.append(worker)
        worker.start()
        return worker

    def add(
        self, kind: str, target: str, events: str = "", smtp: SmtpServer | None = None
    ) -> ChannelView:
        return self.channels.add(STACK, NewChannel(kind, target, parse_events([events]), smtp))

    def emit(self, notice: Notice) -> int | None:
        return self.outbox.emit_now(self.sessions, notice)

    def deliveries(self) -> list[NotificationDelivery]:
        with self.sessions() as session:
            return list(session.scalars(select(NotificationDelivery).order_by("id")))

    def attempts(self, delivery: int | None = None) -> list[NotificationAttempt]:
        with self.sessions() as session:
            query = select(NotificationAttempt).order_by(NotificationAttempt.id)
            if delivery is not None:
                query = query.where(NotificationAttempt.delivery_id == delivery)
            return list(session.scalars(query))

    def settled(self, count: int) -> list[NotificationDelivery]:
        """Wait until ``count`` deliveries exist and none is PENDING."""
        eventually(
            lambda: (
                len(found := self.deliveries()) == count
                and all(d.status != "PENDING" for d in found)
            ),
            what=f"{count} deliveries settled",
        )
        return self.deliveries()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.database.dispose()


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Notifications]:
    notifications = Notifications(tmp_path)
    try:
        yield notifications
    finally:
        notifications.close()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    yield from http_receiver()


def failed_deployment(reason: str = "task sy-shop-prod-r7 exited with status 3") -> Notice:
    failed = DeploymentFacts(STACK, "prod", 4, 7, "sha256:" + "2" * 64, "run 9", reason)
    return rolled_back(failed, to=6, digest=DIGEST, release=8)


def test_each_kind_of_channel_delivers_to_a_real_receiver(
    yard: Notifications, receiver: HttpReceiver
) -> None:
    discord = HttpReceiver().start()
    discord.script.status = 204  # what Discord answers
    sink = SmtpSink(login=("mailer", "smtp-pass-42")).start()
    try:
        yard.add("slack", receiver.url("/services/T0/B0/slacktoken"))
        yard.add("discord", discord.url("/api/webhooks/1/discordtoken"))
        hook = yard.add("webhook", receiver.url("/hooks/stackyard"))
        smtp = SmtpServer("127.0.0.1", sink.port, "none", "mailer", "smtp-pass-42", "yard@x.test")
        yard.add("email", "ops@example.com", smtp=smtp)
        event = yard.emit(failed_deployment())
        yard.worker()

        deliveries = yard.settled(4)
        assert [d.status for d in deliveries] == ["DELIVERED"] * 4
        assert [a.detail for a in yard.attempts()].count("HTTP 200") == 2
        by_path = {r.path: r for r in receiver.wait_for(2)}
        slack = by_path["/services/T0/B0/slacktoken"].json()
        assert slack_problems(slack) == []
        assert slack["text"] == "shop/prod: deployment 4 FAILED; rolled back to release 6"
        fields = slack["attachments"][0]["blocks"][2]["fields"]
        assert {"type": "mrkdwn", "text": f"*Back to digest*\n{DIGEST}"} in fields
        assert f"<{CONSOLE}/ui/stacks/shop|" in str(slack)

        [to_discord] = discord.wait_for(1)
        assert discord_problems(to_discord.json()) == []
        assert to_discord.json()["embeds"][0]["url"] == f"{CONSOLE}/ui/stacks/shop"

        signed = by_path["/hooks/stackyard"]
        assert hook.signing_secret is not None
        assert github_signature_ok(
            hook.signing_secret, signed.body, signed.headers["x-hub-signature-256"]
        )
        assert signed.headers["x-stackyard-event"] == "rolled-back"
        assert signed.json()["id"] == event
        assert signed.json()["fields"]["Back to digest"] == DIGEST

        [(sender, recipients, mail)] = sink.wait_for(1)
        assert (sender, recipients) == ("yard@x.test", ["ops@example.com"])
        assert sink.logins == ["mailer"]
        assert mail["Subject"] == (
            "[stackyard] shop/prod: deployment 4 FAILED; rolled back to release 6"
        )
        assert f"Back to digest:  {DIGEST}" in mail.get_content()
    finally:
        discord.stop()
        sink.stop()


def test_a_receiver_that_fails_at_first_gets_it_on_a_later_try_after_the_back_off(
    yard: Notifications, receiver: HttpReceiver
) -> None:
    receiver.script.fail_next = 2
    yard.add("slack", receiver.url("/services/T/B/x"))
    yard.emit(failed_deployment())
    yard.worker()

    [delivery] = yard.settled(1)
    assert (delivery.status, delivery.attempts) == ("DELIVERED", 3)
    attempts = yard.attempts()
    assert [(a.ok, a.detail) for a in attempts] == [
        (False, "Slack answered HTTP 503: temporarily unavailable"),
        (False, "Slack answered HTTP 503: temporarily unavailable"),
        (True, "HTTP 200"),
    ]
    # Never before its time: 0.2 s after the first failure, 0.4 s after the second.
    assert attempts[1].at - attempts[0].at >= timedelta(seconds=0.2)
    assert attempts[2].at - attempts[1].at >= timedelta(seconds=0.4)
    assert receiver.answers == [503, 503, 200]


def test_a_receiver_that_refuses_the_message_is_not_tried_again(
    yard: Notifications, receiver: HttpReceiver
) -> None:
    receiver.script.status, receiver.script.body = 404, b"no_service"
    yard.add("slack", receiver.url("/services/T/B/removed"))
    yard.emit(failed_deployment())
    yard.worker()

    [delivery] = yard.settled(1)
    assert (delivery.status, delivery.attempts) == ("FAILED", 1)
    assert delivery.last_error == (
        "refused for good: Slack refused the message: HTTP 404: no_service"
    )


def test_a_rate_limited_delivery_waits_as_long_as_the_receiver_asks(
    yard: Notifications, receiver: HttpReceiver
) -> None:
    receiver.script.fail_next, receiver.script.fail_status = 1, 429
    receiver.script.retry_after = "1"
    yard.add("discord", receiver.url("/api/webhooks/1/x"))
    yard.emit(failed_deployment())
    yard.worker()

    [delivery] = yard.settled(1)
    assert delivery.status == "DELIVERED"
    first, second = yard.attempts()
    assert first.detail == "Discord is rate limiting (HTTP 429); wait 1 s"
    assert second.at - first.at >= timedelta(seconds=1)


def test_what_is_pending_is_delivered_after_the_control_plane_restarts(
    yard: Notifications,
) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    yard.add("webhook", f"http://127.0.0.1:{port}/hook")
    yard.emit(failed_deployment())
    first = yard.worker(RetryPolicy(first=1, factor=1, longest=1, attempts=100))
    eventually(lambda: len(yard.attempts()) >= 1, what="a first try")
    first.stop()  # the control plane stops with the delivery PENDING
    [delivery] = yard.deliveries()
    assert delivery.status == "PENDING"
    assert "could not be reached" in yard.attempts()[0].detail
    # While it is down, more happens: recorded, to be sent at the next start.
    yard.emit(failed_deployment("the second failure"))

    receiver = HttpReceiver(port).start()
    try:
        yard.worker()  # a new control plane: same store, nothing in memory
        deliveries = yard.settled(2)
        assert [d.status for d in deliveries] == ["DELIVERED", "DELIVERED"]
        texts = sorted(r.json()["text"] for r in receiver.wait_for(2))
        assert texts == ["task sy-shop-prod-r7 exited with status 3", "the second failure"]
    finally:
        receiver.stop()


def test_no_secret_reaches_a_message_or_the_record_of_an_attempt(
    yard: Notifications, receiver: HttpReceiver
) -> None:
    yard.secrets.set(STACK, "API_TOKEN", "tok-9f8e7d-never-sent")
    token = "/services/T0/B0/channel-token-55"
    receiver.script.body = f"bad request to {token}".encode()
    receiver.script.status = 400  # refused for good, echoing the URL's path
    yard.add("slack", receiver.url(token))
    yard.emit(failed_deployment("crashed; last log lines: token is tok-9f8e7d-never-sent"))
    yard.worker()

    [delivery] = yard.settled(1)
    [sent] = receiver.wait_for(1)
    assert b"tok-9f8e7d-never-sent" not in sent.body
    assert "token is ***" in sent.json()["attachments"][0]["blocks"][1]["text"]["text"]
    assert (
        delivery.last_error
        == "refused for good: Slack refused the message: HTTP 400: bad request to ***"
    )
    for attempt in yard.attempts():
        assert "channel-token-55" not in attempt.detail
    stored = yard.db_file.read_bytes() + Path(str(yard.db_file) + "-wal").read_bytes()
    assert b"channel-token-55" not in stored


def test_an_event_without_a_listening_channel_writes_nothing(yard: Notifications) -> None:
    yard.add("slack", "https://hooks.slack.com/services/T/B/x", events="approval")
    assert yard.emit(failed_deployment()) is None
    with yard.sessions() as session:
        assert session.scalars(select(NotificationEvent)).all() == []


def test_a_removed_channel_gets_nothing_more(yard: Notifications, receiver: HttpReceiver) -> None:
    channel = yard.add("slack", receiver.url("/services/T/B/x"))
    yard.emit(failed_deployment())
    assert len(yard.deliveries()) == 1
    yard.channels.remove(STACK, channel.number)
    assert yard.deliveries() == []
    yard.worker()
    assert receiver.received == []


def test_an_smtp_server_that_refuses_the_login_fails_the_delivery_for_good(
    yard: Notifications,
) -> None:
    sink = SmtpSink(login=("mailer", "right")).start()
    try:
        smtp = SmtpServer("127.0.0.1", sink.port, "none", "mailer", "wrong", "yard@x.test")
        yard.add("email", "ops@example.com", smtp=smtp)
        yard.emit(failed_deployment())
        yard.worker()
        [delivery] = yard.settled(1)
        assert delivery.status == "FAILED"
        assert f"the SMTP server 127.0.0.1:{sink.port} refused the login of mailer" in (
            delivery.last_error
        )
        assert sink.mails == []
    finally:
        sink.stop()


def test_starttls_that_the_server_does_not_offer_is_not_skipped(yard: Notifications) -> None:
    sink = SmtpSink().start()
    try:
        smtp = SmtpServer("127.0.0.1", sink.port, "starttls", sender="yard@x.test")
        yard.add("email", "ops@example.com", smtp=smtp)
        yard.emit(failed_deployment())
        yard.worker()
        [delivery] = yard.settled(1)
        assert delivery.status == "FAILED"
        assert "does not offer STARTTLS" in delivery.last_error
        assert sink.mails == []  # never sent in the clear instead
    finally:
        sink.stop()


def test_channel_secrets_are_sealed_at_rest(yard: Notifications) -> None:
    yard.add("slack", "https://hooks.slack.com/services/T0/B0/sealed-slack-token")
    smtp = SmtpServer("smtp.example.com", 587, "starttls", "mailer", "sealed-smtp-pass")
    yard.add("email", "ops@example.com", smtp=smtp)
    listed = yard.channels.list_channels(STACK)
    assert [c.shown for c in listed] == ["https://hooks.slack.com/…", "ops@example.com"]
    assert "sealed" not in str([c.model_dump() for c in listed])
    stored = yard.db_file.read_bytes() + Path(str(yard.db_file) + "-wal").read_bytes()
    assert b"sealed-slack-token" not in stored
    assert b"sealed-smtp-pass" not in stored


@pytest.mark.parametrize(
    ("kind", "target", "error"),
    [
        ("slack", "http://hooks.slack.com/services/T/B/x", "plain http is allowed"),
        ("webhook", "http://127.0.0.1:7878/api/v1/stacks", "one of the platform's own endpoints"),
        ("email", "ops@example.com\r\nBcc: x@y.z", "is not one email address"),
        ("pager", "https://example.com", "'pager' is not a kind of channel"),
    ],
)
def test_a_channel_that_would_leak_or_reach_the_platform_is_refused(
    yard: Notifications, kind: str, target: str, error: str
) -> None:
    smtp = SmtpServer("smtp.example.com", 587) if kind == "email" else None
    with pytest.raises(Exception, match=error):
        yard.add(kind, target, smtp=smtp)
    assert yard.channels.list_channels(STACK) == []


def test_the_same_channel_twice_is_refused(yard: Notifications) -> None:
    yard.add("slack", "https://hooks.slack.com/services/T/B/x")
    with pytest.raises(Exception, match="already has this slack channel: channel 1"):
        yard.add("slack", "https://hooks.slack.com/services/T/B/x", events="approval")


def test_a_healed_stage_is_told_once_in_its_quiet_time(yard: Notifications) -> None:
    yard.add("slack", "https://hooks.slack.com/services/T/B/x")
    healed = Notice(EventKind.HEALED, STACK, "prod", "replaced", "task exited")
    assert yard.emit(healed) is not None
    assert yard.emit(healed) is None
    other_stage = Notice(EventKind.HEALED, STACK, "dev", "replaced", "task exited")
    assert yard.emit(other_stage) is not None
