"""The certificate notification: sent when a name's certificate turns failed, expiring or
expired, once per change of that state, and not again after a restart (the state last
reported is stored). The router here is a fake that says what each certificate is."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import select

from stackyard.deploy.certwatch import CertificateWatch, certificate_alerts
from stackyard.errors import ComponentError
from stackyard.notify.events import EventKind
from stackyard.notify.outbox import Outbox
from stackyard.router.base import Certificate, Route
from stackyard.router.fake import FakeRouter
from stackyard.store.models import NotificationEvent, StageRoute
from tests.unit.controller_fixtures import STACK, STAGE, Yard, make_yard
from tests.unit.test_notify_emitters import listen

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WARNING = timedelta(days=14)
ERROR = "tls-alpn-01: Connection refused at 127.0.0.2:5001"


def failed(name: str, error: str = ERROR) -> Certificate:
    return Certificate(name, "failed", error=error, hint="check DNS")


def valid(name: str, days: float) -> Certificate:
    return Certificate(name, "valid", issuer="CA", expires=NOW + timedelta(days=days))


def alerts(
    certs: Sequence[Certificate], recorded: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    found = certificate_alerts(STACK, STAGE, certs, recorded, now=NOW, warning=WARNING)
    return found.states, [n.title for n in found.notices]


def test_a_failed_name_is_told_once_until_it_recovers_and_fails_again() -> None:
    states, titles = alerts([failed("a.test"), valid("b.test", 60)], {})
    assert states == {"a.test": "failed", "b.test": "ok"}
    assert titles == [f"{STACK}/{STAGE}: certificate of a.test: failed: {ERROR}"]
    # Caddy retries (pending), fails again with another message: nothing new to say.
    assert alerts([Certificate("a.test", "pending")], states) == ({"a.test": "failed"}, [])
    assert alerts([failed("a.test", "another answer")], states) == ({"a.test": "failed"}, [])
    states, titles = alerts([valid("a.test", 60)], states)
    assert (states, titles) == ({"a.test": "ok"}, [])
    assert len(alerts([failed("a.test")], states)[1]) == 1


def test_a_certificate_close_to_its_expiry_or_expired_is_told_once_each() -> None:
    assert alerts([valid("a.test", 14.5)], {}) == ({"a.test": "ok"}, [])
    states, titles = alerts([valid("a.test", 13.5)], {})
    assert titles == [f"{STACK}/{STAGE}: certificate of a.test: expires in 13 days; "
                      "Caddy has not renewed it yet"]  # fmt: skip
    assert alerts([valid("a.test", 12)], states) == ({"a.test": "expiring"}, [])
    expired = Certificate("a.test", "expired", expires=NOW - timedelta(hours=1))
    states, titles = alerts([expired], states)
    assert states == {"a.test": "expired"}
    assert titles == [f"{STACK}/{STAGE}: certificate of a.test: expired; Caddy could not renew it"]


def test_names_the_stage_no_longer_has_are_forgotten_and_pending_ones_say_nothing() -> None:
    states, titles = alerts([Certificate("new.test", "pending")], {"gone.test": "failed"})
    assert (states, titles) == ({"new.test": "ok"}, [])


@dataclass
class CertificateRouter(FakeRouter):
    """The fake router, with certificates the test sets per name."""

    supports_certificates: ClassVar[bool] = True
    states: dict[str, Certificate] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)  # routes whose state cannot be read
    warmed: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (route, names)
    renewed: list[str] = field(default_factory=list)  # routes asked to renew what is due

    def certificates(self, route: Route) -> list[Certificate]:
        if route.name in self.unreadable:
            raise ComponentError(f"cannot read the certificates of {route.name}")
        return [self.states.get(name, Certificate(name, "pending")) for name in route.hosts]

    def warm(self, route: Route, names: Sequence[str] = ()) -> None:
        self.warmed.append((route.name, tuple(names)))

    def renew(self, route: Route) -> list[str]:
        self.renewed.append(route.name)
        return []


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    yield from make_yard(tmp_path)


def certificate_events(yard: Yard) -> list[dict[str, object]]:
    with yard.sessions() as session:
        rows = session.scalars(
            select(NotificationEvent).where(NotificationEvent.kind == str(EventKind.CERTIFICATE))
        ).all()
        return [dict(row.notice) for row in rows]


def test_the_watch_sends_once_per_change_and_nothing_again_after_a_restart(yard: Yard) -> None:
    listen(yard.sessions, yard.stack_id, EventKind.CERTIFICATE)
    with yard.sessions.begin() as session:
        session.add(StageRoute(stack_id=yard.stack_id, stage=STAGE, host="shop.test",
                               aliases=["broken.test"], tls="acme"))  # fmt: skip
        session.add(StageRoute(stack_id=yard.stack_id, stage="plain", host="plain.test", tls="off"))
    router = CertificateRouter(
        states={"shop.test": valid("shop.test", 60), "broken.test": failed("broken.test")}
    )

    def watch() -> CertificateWatch:
        return CertificateWatch(yard.sessions, router, Outbox(wake=lambda: None), clock=lambda: NOW)

    assert watch().check() == 1
    [notice] = certificate_events(yard)
    fields = dict(notice["fields"])  # type: ignore[call-overload]
    assert (fields["Stage"], fields["Domain"]) == (STAGE, "broken.test")
    assert str(notice["text"]) == f"failed: {ERROR}\ncheck DNS"
    assert watch().check() == 0  # the next look, and a new control plane: nothing again
    assert len(certificate_events(yard)) == 1

    router.states["broken.test"] = valid("broken.test", 60)
    assert watch().check() == 0
    router.states["broken.test"] = failed("broken.test")
    assert watch().check() == 1
    assert len(certificate_events(yard)) == 2


def test_a_stage_whose_certificates_cannot_be_read_holds_up_no_other(yard: Yard) -> None:
    listen(yard.sessions, yard.stack_id, EventKind.CERTIFICATE)
    with yard.sessions.begin() as session:
        session.add(StageRoute(stack_id=yard.stack_id, stage="a", host="a.test", tls="acme"))
        session.add(StageRoute(stack_id=yard.stack_id, stage="b", host="b.test", tls="acme"))
    states = {"a.test": failed("a.test"), "b.test": failed("b.test")}
    router = CertificateRouter(states=states, unreadable={f"{STACK}-a"})
    watch = CertificateWatch(yard.sessions, router, Outbox(wake=lambda: None), clock=lambda: NOW)
    assert watch.check() == 1
    assert [dict(n["fields"])["Domain"] for n in certificate_events(yard)] == ["b.test"]  # type: ignore[call-overload]
    router.unreadable.clear()  # readable again: its failure is told then
    assert watch.check() == 1


def test_names_still_pending_are_warmed_again_at_each_look_and_the_others_not(
    yard: Yard,
) -> None:
    """A lost warming handshake must not leave a name pending until a client's first
    handshake: each look has the router warm the names still pending, and only those."""
    with yard.sessions.begin() as session:
        session.add(StageRoute(stack_id=yard.stack_id, stage=STAGE, host="shop.test",
                               aliases=["new.test", "broken.test"], tls="acme"))  # fmt: skip
        session.add(StageRoute(stack_id=yard.stack_id, stage="plain", host="plain.test", tls="off"))
    router = CertificateRouter(
        states={"shop.test": valid("shop.test", 60), "broken.test": failed("broken.test")}
    )
    watch = CertificateWatch(yard.sessions, router, Outbox(wake=lambda: None), clock=lambda: NOW)
    watch.check()
    assert router.warmed == [(f"{STACK}-{STAGE}", ("new.test",))]
    watch.check()  # still pending: warmed again
    assert router.warmed == [(f"{STACK}-{STAGE}", ("new.test",))] * 2
    router.states["new.test"] = valid("new.test", 60)
    watch.check()
    assert len(router.warmed) == 2
    # Each look first has the router renew what it issues itself (tls: internal), per
    # stage with HTTPS names; the plain one is not asked.
    assert router.renewed == [f"{STACK}-{STAGE}"] * 3
