"""What a stage loop says: to the platform's log always, and to the active deployment's own
log file (masked: no secret value ever reaches it), plus the heal events in the store (and
their notifications, in the same transaction).

The executor (deploy/execute.py) and the loop's error handling (deploy/loops.py) write
through ``StageLog``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.deploy.keys import StageKey
from stackyard.notify.events import Notice
from stackyard.notify.outbox import Outbox
from stackyard.secrets.masking import SecretMasker
from stackyard.store.models import Event

log = logging.getLogger("stackyard.deploy.controller")


class StageLog:
    """One stage's lines and events. ``secret_values`` are masked in every line written."""

    def __init__(
        self,
        key: StageKey,
        sessions: sessionmaker[Session],
        secret_values: Callable[[], list[str]],
        outbox: Outbox | None = None,
    ) -> None:
        self.key = key
        self._sessions = sessions
        self._secret_values = secret_values
        self._outbox = outbox or Outbox()

    def masker(self) -> SecretMasker:
        return SecretMasker(self._secret_values())

    def say(self, text: str, log_path: str | None) -> None:
        """Log the line, and append it to the deployment's log when one is active."""
        log.info("stage %s: %s", self.key, text)
        if log_path is not None:
            self.write(log_path, text)

    def write(self, log_path: str, text: str) -> None:
        """Append one line to a deployment's log file (OSError when it cannot be written)."""
        with BuildLog(Path(log_path), self.masker(), None) as deployment_log:
            deployment_log.line("deploy", LineKind.MESSAGE, text)

    def event(self, kind: str, message: str, notice: Notice | None = None) -> None:
        """Record an event of the stage in the store (e.g. ``heal``), and log it; its
        ``notice`` goes to the outbox in the same transaction."""
        log.info("stage %s: %s", self.key, message)
        with self._sessions.begin() as session:
            session.add(Event(kind=kind, subject=str(self.key), message=message))
            if notice is not None:
                self._outbox.emit(session, notice)
