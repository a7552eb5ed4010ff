"""`SqlSecretStore`: the secret store in the platform's own database (SQLite, PostgreSQL).

Two tables: ``secrets`` holds each scope's current version, ``secret_versions`` every
version ever set, as Fernet ciphertext. The base class (store.py) encrypts and decrypts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.errors import NotFoundError
from stackyard.secrets.store import SealedVersion, SecretStore, SecretView
from stackyard.secrets.vault import Vault
from stackyard.store.models import Secret, SecretVersion, Stack

EVERY_STAGE = ""  # the ``stage`` of a stack-wide secret in the tables


class SqlSecretStore(SecretStore):
    """Secrets in the ``secrets`` and ``secret_versions`` tables of the platform's store."""

    name: ClassVar[str] = "sql"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        vault: Vault,
        *,
        platform_secrets: Iterable[str] = (),
    ) -> None:
        super().__init__(vault, platform_secrets=platform_secrets)
        self._sessions = sessions

    def secrets(self, stack: str, *, stage: str | None = None) -> list[SecretView]:
        with self._sessions() as session:
            query = select(Secret).where(Secret.stack_id == _stack_id(session, stack))
            if stage is not None:
                query = query.where(Secret.stage.in_((EVERY_STAGE, stage)))
            rows = session.scalars(query.order_by(Secret.stage, Secret.name))
            return [_view(row) for row in rows]

    def versions(self, stack: str, stage: str | None) -> dict[str, int]:
        scopes = (EVERY_STAGE,) if stage is None else (EVERY_STAGE, stage)
        with self._sessions() as session:
            rows = session.scalars(
                select(Secret).where(
                    Secret.stack_id == _stack_id(session, stack), Secret.stage.in_(scopes)
                )
            ).all()
        ordered = sorted(rows, key=lambda row: (row.stage != EVERY_STAGE, row.name))
        return {row.name: row.version for row in ordered}

    def _put(
        self,
        stack: str,
        stage: str | None,
        name: str,
        ciphertext: str,
        *,
        unchanged: Callable[[SealedVersion], bool],
    ) -> tuple[SecretView, bool]:
        scope = stage or EVERY_STAGE
        with self._sessions.begin() as session:
            stack_id = _stack_id(session, stack)
            row = session.scalar(
                select(Secret).where(
                    Secret.stack_id == stack_id, Secret.stage == scope, Secret.name == name
                )
            )
            if row is not None:
                current = _sealed_version(session, stack_id, name, row.version)
                if current is not None and unchanged(current):
                    return _view(row), False
            version = (
                session.scalar(
                    select(func.max(SecretVersion.version)).where(
                        SecretVersion.stack_id == stack_id, SecretVersion.name == name
                    )
                )
                or 0
            ) + 1
            now = datetime.now(UTC)
            session.add(
                SecretVersion(
                    stack_id=stack_id,
                    stage=scope,
                    name=name,
                    version=version,
                    ciphertext=ciphertext,
                    created_at=now,
                )
            )
            if row is None:
                row = Secret(stack_id=stack_id, stage=scope, name=name, version=version)
                session.add(row)
            row.version, row.updated_at = version, now
            session.flush()
            return _view(row), True

    def _remove(self, stack: str, stage: str | None, name: str) -> SecretView | None:
        with self._sessions.begin() as session:
            row = session.scalar(
                select(Secret).where(
                    Secret.stack_id == _stack_id(session, stack),
                    Secret.stage == (stage or EVERY_STAGE),
                    Secret.name == name,
                )
            )
            if row is None:
                return None
            view = _view(row)
            session.execute(delete(Secret).where(Secret.id == row.id))
            return view

    def _sealed(self, stack: str, versions: Mapping[str, int] | None) -> list[SealedVersion]:
        with self._sessions() as session:
            query = select(SecretVersion).where(SecretVersion.stack_id == _stack_id(session, stack))
            if versions is not None:
                query = query.where(SecretVersion.name.in_(list(versions)))
            rows = session.scalars(query.order_by(SecretVersion.id)).all()
        sealed = [SealedVersion(row.name, row.version, row.ciphertext) for row in rows]
        if versions is None:
            return sealed
        return [v for v in sealed if versions.get(v.name) == v.version]

    def _drop(self, stack: str) -> None:
        # The rows go with the stack's row (ON DELETE CASCADE); one left behind by a stack
        # deleted before would not be found by name any more.
        with self._sessions.begin() as session:
            stack_id = session.scalar(select(Stack.id).where(Stack.name == stack))
            if stack_id is None:
                return
            session.execute(delete(Secret).where(Secret.stack_id == stack_id))
            session.execute(delete(SecretVersion).where(SecretVersion.stack_id == stack_id))


def _stack_id(session: Session, stack: str) -> int:
    found = session.scalar(select(Stack.id).where(Stack.name == stack))
    if found is None:
        raise NotFoundError(
            f"no stack named '{stack}'",
            hint="create it with `stackyard stacks create NAME --repo PATH_OR_URL`",
        )
    return found


def _sealed_version(
    session: Session, stack_id: int, name: str, version: int
) -> SealedVersion | None:
    row = session.scalar(
        select(SecretVersion).where(
            SecretVersion.stack_id == stack_id,
            SecretVersion.name == name,
            SecretVersion.version == version,
        )
    )
    return None if row is None else SealedVersion(row.name, row.version, row.ciphertext)


def _view(row: Secret) -> SecretView:
    return SecretView(
        name=row.name, stage=row.stage or None, version=row.version, updated_at=row.updated_at
    )
