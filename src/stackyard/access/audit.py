"""The audit log: an append-only table of who did what, when, from where, with what result.

The API writes one entry for every change (through the API, the CLI, the console), every
git push report and webhook delivery, and every refused authentication or authorization
(``api/audit.py`` decides what an entry says; this module only stores and reads them).
Nothing updates an entry; ``prune`` removes the entries older than the retention
setting, and nothing else deletes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.access.durations import parse_duration
from stackyard.store.models import AuditEntry

PRUNE_EVERY = 1000
"""Entries written between two looks for entries past the retention."""
MAX_LIMIT = 1000


@dataclass(frozen=True)
class AuditRecord:
    """One entry, as the API makes it. ``parameters`` never holds a secret value."""

    action: str
    result: str  # ok | refused | failed
    status: int = 0
    actor: str = ""
    token_id: str = ""
    source: str = ""
    via: str = ""
    stack: str = ""
    target: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


class AuditView(BaseModel):
    id: int
    at: datetime
    actor: str
    token_id: str
    source: str
    via: str
    action: str
    stack: str
    target: str
    parameters: dict[str, Any]
    result: str
    status: int
    detail: str


class AuditList(BaseModel):
    entries: list[AuditView]


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session], *, retention_days: int = 365) -> None:
        self._sessions = sessions
        self._retention = retention_days
        self._written = 0
        self._lock = threading.Lock()

    def record(self, entry: AuditRecord) -> None:
        values = {
            "at": datetime.now(UTC),
            "actor": entry.actor[:128],
            "token_id": entry.token_id[:16],
            "source": entry.source[:64],
            "via": entry.via[:16],
            "action": entry.action[:64],
            "stack": entry.stack[:63],
            "target": entry.target,
            "parameters": entry.parameters,
            "result": entry.result[:16],
            "status": entry.status,
            "detail": entry.detail,
        }
        with self._sessions.begin() as session:
            session.execute(insert(AuditEntry).values(**values))
        with self._lock:
            self._written += 1
            due = self._written % PRUNE_EVERY == 0
        if due:
            self.prune()

    def prune(self, now: datetime | None = None) -> int:
        """Delete the entries older than the retention (none when it is 0: keep all)."""
        if self._retention <= 0:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._retention)
        with self._sessions.begin() as session:
            result = session.execute(delete(AuditEntry).where(AuditEntry.at < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)

    def query(
        self,
        *,
        stack: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: str | None = None,
        limit: int = 100,
    ) -> AuditList:
        """Entries newest first, filtered by stack, person, action and age (``since``:
        ``1d``, ``12h``)."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc())
        if stack:
            query = query.where(AuditEntry.stack == stack)
        if actor:
            query = query.where(AuditEntry.actor == actor)
        if action:
            query = query.where(AuditEntry.action == action)
        if since:
            query = query.where(AuditEntry.at >= datetime.now(UTC) - parse_duration(since, "since"))
        query = query.limit(max(1, min(limit, MAX_LIMIT)))
        with self._sessions() as session:
            rows = session.scalars(query)
            return AuditList(
                entries=[AuditView.model_validate(row, from_attributes=True) for row in rows]
            )
