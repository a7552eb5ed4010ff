"""A stack's notification channels: add, list, remove; their secrets sealed at rest.

A channel's webhook URL (its token is in it), SMTP password and signing secret are sealed
together with the secret store's key (``SecretStore.seal``), never returned by the API and
shown masked: only a webhook's signing secret is shown, once, in the answer that adds it.
``ChannelKinds`` makes one adapter per kind (``plugins.channel``), shared by the records
(to check a new channel) and the delivery worker.
"""

from __future__ import annotations

import json
import secrets as tokens
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard import plugins
from stackyard.channels.base import (
    Channel,
    Destination,
    SmtpServer,
    check_url,
    refuse_platform_endpoint,
)
from stackyard.errors import NotFoundError, UsageError
from stackyard.notify.events import EventKind
from stackyard.secrets.store import SecretStore
from stackyard.store.models import NotificationChannel, Stack

URL_KINDS = ("slack", "discord", "webhook")
Endpoints = tuple[tuple[str, int], ...]


class ChannelKinds:
    """One adapter per channel kind, made on first use, closed together."""

    def __init__(self, make: Callable[[str], Channel] | None = None) -> None:
        self._make = make or (lambda kind: plugins.create(plugins.channel(kind), {}))
        self._made: dict[str, Channel] = {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> Channel:
        with self._lock:
            found = self._made.get(kind)
            if found is None:
                found = self._made[kind] = self._make(kind)
            return found

    def close(self) -> None:
        with self._lock:
            made, self._made = list(self._made.values()), {}
        for channel in made:
            channel.close()


@dataclass(frozen=True)
class NewChannel:
    """What ``notify add`` asks for; ``target`` is the URL, or the email address."""

    kind: str
    target: str
    events: list[EventKind]
    smtp: SmtpServer | None = None


class ChannelView(BaseModel):
    """A channel as the API shows it: its URL masked, never a secret."""

    number: int
    kind: str
    shown: str
    events: list[str]
    smtp: dict[str, Any] | None
    created_at: datetime
    signing_secret: str | None = None  # a new webhook channel's, in add's answer only


@dataclass(frozen=True)
class Addressed:
    """A channel unsealed, for one delivery: where to, and what to mask."""

    id: int
    number: int
    kind: str
    stack: str
    destination: Destination
    secrets: tuple[str, ...]


class ChannelRecords:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        secrets: SecretStore,
        kinds: ChannelKinds,
        *,
        platform_endpoints: Iterable[tuple[str, int]] = (),
    ) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._kinds = kinds
        self.platform_endpoints: Endpoints = tuple(platform_endpoints)

    def add(self, stack: str, new: NewChannel) -> ChannelView:
        """Check and store a channel; the answer has a webhook's signing secret, once."""
        channel = self._channel(new.kind)
        signing = tokens.token_hex(32) if channel.needs_secret else ""
        destination = Destination(new.target.strip(), signing, new.smtp)
        self.check(new.kind, destination)
        with self._sessions.begin() as session:
            stack_id = stack_row_id(session, stack)
            rows = session.scalars(
                select(NotificationChannel).where(NotificationChannel.stack_id == stack_id)
            ).all()
            for row in rows:
                if row.kind == new.kind and self._open(row, stack)["target"] == destination.target:
                    raise UsageError(
                        f"stack {stack} already has this {new.kind} channel: channel {row.number}",
                        hint=f"change its events: stackyard notify remove {stack} {row.number}, "
                        "then add it again",
                    )
            row = NotificationChannel(
                stack_id=stack_id,
                number=max((r.number for r in rows), default=0) + 1,
                kind=new.kind,
                shown=shown(new.kind, destination.target),
                settings=_smtp_settings(new.smtp),
                sealed=self._secrets.seal(
                    json.dumps(
                        {
                            "target": destination.target,
                            "secret": signing,
                            "password": new.smtp.password if new.smtp else "",
                        }
                    )
                ),
                events=[str(kind) for kind in new.events],
            )
            session.add(row)
            session.flush()
            view = _view(row)
        view.signing_secret = signing or None
        return view

    def list_channels(self, stack: str) -> list[ChannelView]:
        with self._sessions() as session:
            stack_id = stack_row_id(session, stack)
            rows = session.scalars(
                select(NotificationChannel)
                .where(NotificationChannel.stack_id == stack_id)
                .order_by(NotificationChannel.number)
            )
            return [_view(row) for row in rows]

    def remove(self, stack: str, number: int) -> ChannelView:
        """Remove the channel; its deliveries still to come go with it."""
        with self._sessions.begin() as session:
            row = _row(session, stack, number)
            view = _view(row)
            session.delete(row)
        return view

    def addressed(self, session: Session, channel_id: int) -> Addressed | None:
        """The channel unsealed (None when it was removed meanwhile)."""
        found = session.execute(
            select(NotificationChannel, Stack.name)
            .join(Stack, Stack.id == NotificationChannel.stack_id)
            .where(NotificationChannel.id == channel_id)
        ).first()
        if found is None:
            return None
        row, stack = found
        opened = self._open(row, stack)
        smtp = None
        if row.settings:
            smtp = SmtpServer(**row.settings, password=opened["password"])
        return Addressed(
            id=row.id,
            number=row.number,
            kind=row.kind,
            stack=stack,
            destination=Destination(opened["target"], opened["secret"], smtp),
            secrets=_secrets_of(row.kind, opened),
        )

    def check(self, kind: str, destination: Destination) -> None:
        """The channel's own rules, and none of the platform's own endpoints as receiver."""
        self._channel(kind).check(destination)
        if kind in URL_KINDS:
            host, port = check_url(destination.target, f"the {kind} URL")
        elif destination.smtp is not None:
            host, port = destination.smtp.host, destination.smtp.port
        else:
            return
        refuse_platform_endpoint(host, port, self.platform_endpoints, f"the {kind} channel")

    def _channel(self, kind: str) -> Channel:
        available = plugins.available("channel")
        if kind not in available:
            raise UsageError(
                f"'{kind}' is not a kind of channel", hint="kinds: " + ", ".join(available)
            )
        return self._kinds.get(kind)

    def _open(self, row: NotificationChannel, stack: str) -> dict[str, str]:
        text = self._secrets.unseal(row.sealed, what=f"channel {row.number} of stack {stack}")
        opened: dict[str, str] = json.loads(text)
        return opened


def stack_row_id(session: Session, name: str) -> int:
    stack_id = session.scalar(select(Stack.id).where(Stack.name == name))
    if stack_id is None:
        raise NotFoundError(f"no stack named {name}", hint="see `stackyard stacks list`")
    return stack_id


def shown(kind: str, target: str) -> str:
    """A URL as ``scheme://host/…``: any part of its path or query may be the token
    (ntfy.sh/TOPIC, example.com/TOKEN/hook), so none of it is shown; an address whole."""
    if kind not in URL_KINDS:
        return target
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.netloc}/…"


def _row(session: Session, stack: str, number: int) -> NotificationChannel:
    stack_id = stack_row_id(session, stack)
    row = session.scalar(
        select(NotificationChannel).where(
            NotificationChannel.stack_id == stack_id, NotificationChannel.number == number
        )
    )
    if row is None:
        raise NotFoundError(
            f"stack {stack} has no notification channel {number}",
            hint=f"see `stackyard notify list {stack}`",
        )
    return row


def _secrets_of(kind: str, opened: dict[str, str]) -> tuple[str, ...]:
    """What to mask in a channel's messages and attempt records: the signing secret, the
    SMTP password, and a webhook URL with its path (a receiver may echo the path alone)."""
    found = [opened["secret"], opened["password"]]
    if kind in URL_KINDS:
        target = opened["target"]
        path = urlsplit(target).path
        found += [target, path if len(path) > 1 else ""]
    return tuple(value for value in found if value)


def _smtp_settings(smtp: SmtpServer | None) -> dict[str, Any]:
    if smtp is None:
        return {}
    return {
        "host": smtp.host,
        "port": smtp.port,
        "security": smtp.security,
        "username": smtp.username,
        "sender": smtp.sender,
    }


def _view(row: NotificationChannel) -> ChannelView:
    return ChannelView(
        number=row.number,
        kind=row.kind,
        shown=row.shown,
        events=list(row.events),
        smtp=dict(row.settings) or None,
        created_at=row.created_at,
    )
