"""The certificate notification: a ``certificate`` event when a host name's certificate
turns failed, expires soon or has expired, once per change of that state.

``certificate_alerts`` (pure) compares what the router says now with the state last
recorded per name (``StageRoute.certificate_notices``) and returns the new states and the
notices to send; ``CertificateWatch`` runs it for every stage with host names on a slow
timer (reading the router's certificate state is a few file reads) and writes both in one
transaction, so a restart of the control plane sends nothing it already sent.

Before it looks, it has the router renew what it issues itself (``tls: internal`` names'
certificates, router/internal_ca.py) when due. It also has the router warm again every
name still ``pending``: the handshake that has
Caddy obtain a name's certificate follows each change of the stage's names, and one that
is lost (Caddy restarting, a connection reset) would otherwise leave the name pending
until a client's first handshake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy.domains import route_of
from stackyard.deploy.ticker import Ticker
from stackyard.errors import StackyardError
from stackyard.notify import events as notices
from stackyard.notify.outbox import Outbox
from stackyard.router.base import Certificate, Router
from stackyard.store.models import Stack, StageRoute

log = logging.getLogger(__name__)

WARNING_DAYS = 14
"""A valid certificate this close to its expiry is reported: ACME CAs' certificates live
90 days and Caddy renews them with a third of that left, so 14 days means renewals have
failed for over two weeks."""

CHECK_EVERY = 60.0
"""Seconds between two looks at every stage's certificates."""

OK = "ok"  # valid and not about to expire, pending, or plain HTTP: nothing to say
FAILED = "failed"
EXPIRING = "expiring"
EXPIRED = "expired"


def alert_state(cert: Certificate, now: datetime, warning: timedelta) -> str:
    """What a certificate's state means for its notification: ok, failed, expiring or
    expired. A pending name keeps no state of its own: Caddy is at it."""
    if cert.state == "failed":
        return FAILED
    if cert.state == "expired":
        return EXPIRED
    if cert.state == "valid" and cert.expires is not None and cert.expires - now <= warning:
        return EXPIRING
    return OK


def _problem(cert: Certificate, state: str, now: datetime) -> str:
    if state == FAILED:
        return f"failed: {cert.error}"
    if state == EXPIRED:
        return "expired; Caddy could not renew it"
    days = (cert.expires - now).days if cert.expires else 0
    return f"expires in {days} day{'s' if days != 1 else ''}; Caddy has not renewed it yet"


@dataclass(frozen=True)
class Alerts:
    """One stage's outcome: the state to record per name, and what to send."""

    states: dict[str, str]
    notices: tuple[notices.Notice, ...]


def certificate_alerts(
    stack: str,
    stage: str,
    certificates: Sequence[Certificate],
    recorded: Mapping[str, str],
    *,
    now: datetime,
    warning: timedelta,
) -> Alerts:
    """A notice for each name whose state turned failed, expiring or expired since it was
    recorded (a name never recorded counts as ok); a pending name keeps its recorded state,
    so a retry that fails again says nothing new. Names the stage no longer has are
    forgotten."""
    states: dict[str, str] = {}
    sent: list[notices.Notice] = []
    for cert in certificates:
        before = recorded.get(cert.name, OK)
        if cert.state == "pending":
            states[cert.name] = before
            continue
        state = alert_state(cert, now, warning)
        states[cert.name] = state
        if state != OK and state != before:
            problem = _problem(cert, state, now)
            expires = cert.expires if state != FAILED else None
            sent.append(
                notices.certificate_problem(
                    stack, stage, cert.name, problem, expires, cert.hint if state == FAILED else ""
                )
            )
    return Alerts(states, tuple(sent))


class CertificateWatch:
    """Looks at every stage's certificates every ``interval`` seconds, on one thread."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        router: Router,
        outbox: Outbox,
        *,
        warning_days: int = WARNING_DAYS,
        interval: float = CHECK_EVERY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._router = router
        self._outbox = outbox
        self._warning = timedelta(days=warning_days)
        self._clock = clock
        self._ticker = Ticker("certificate-watch", "checking certificates", interval, self.check)

    def start(self) -> None:
        if self._router.supports_certificates:
            self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def check(self) -> int:
        """One look at every stage with HTTPS names (its pending names warmed again); the
        number of notices emitted."""
        with self._sessions() as session:
            rows = session.execute(
                select(Stack.name, StageRoute)
                .join(Stack, Stack.id == StageRoute.stack_id)
                .where(StageRoute.host.is_not(None), StageRoute.tls != "off")
            ).all()
            session.expunge_all()
        emitted = 0
        for stack, row in rows:
            route = route_of(stack, row)
            try:
                renewed = self._router.renew(route)
                if renewed:
                    log.info("certificates of %s/%s renewed: %s",
                             stack, row.stage, ", ".join(renewed))  # fmt: skip
                certificates = self._router.certificates(route)
            except StackyardError as exc:  # one unreadable name holds up no other stage
                log.warning("certificates of %s/%s: %s (looked at again later)",
                            stack, row.stage, exc)  # fmt: skip
                continue
            pending = [cert.name for cert in certificates if cert.state == "pending"]
            if pending:
                log.info("certificates of %s/%s still pending: %s (warmed again)",
                         stack, row.stage, ", ".join(pending))  # fmt: skip
                self._router.warm(route, pending)
            alerts = certificate_alerts(
                stack,
                row.stage,
                certificates,
                row.certificate_notices or {},
                now=self._clock(),
                warning=self._warning,
            )
            if alerts.states == (row.certificate_notices or {}) and not alerts.notices:
                continue
            with self._sessions.begin() as session:
                stored = session.get(StageRoute, row.id)
                if stored is None:  # the stack was deleted meanwhile
                    continue
                stored.certificate_notices = alerts.states
                for notice in alerts.notices:
                    log.info("certificate of %s/%s: %s", stack, row.stage, notice.title)
                    self._outbox.emit(session, notice)
            emitted += len(alerts.notices)
        return emitted
