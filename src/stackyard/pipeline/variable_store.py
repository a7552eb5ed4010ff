"""The platform's build and runtime variables of every stack, and what builds and releases read.

Low level on purpose: it stores and reads rows, and knows nothing of deployments. Secrets
live in the secret store (secrets/); ``build_inputs`` joins both for a build. The variable
service (variables.py) validates changes before they get here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.secrets.store import SecretStore
from stackyard.stacks.service import StackService
from stackyard.store.models import Variable

Kind = Literal["build", "runtime"]
EVERY_STAGE = ""  # the ``stage`` of a stack-wide variable in the store


class VariableView(BaseModel):
    name: str
    value: str
    kind: str  # build | runtime
    stage: str | None  # None: every stage
    updated_at: datetime


@dataclass(frozen=True)
class BuildInputs:
    """What a build gets from the platform: build variables, and stack-wide secrets by name
    (for ``env.secrets-manager`` and ``env.parameter-store`` in build.yml)."""

    variables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


def runtime_variables(session: Session, stack_id: int, stage: str) -> dict[str, str]:
    """The platform's runtime variables of ``stage``: stack-wide ones, then the stage's."""
    rows = session.scalars(
        select(Variable).where(
            Variable.stack_id == stack_id,
            Variable.kind == "runtime",
            Variable.stage.in_((EVERY_STAGE, stage)),
        )
    ).all()
    ordered = sorted(rows, key=lambda row: (row.stage != EVERY_STAGE, row.name))
    return {row.name: row.value for row in ordered}


class VariableStore:
    """Variables of every stack; with the secret store, what a build gets."""

    def __init__(self, sessions: sessionmaker[Session], secrets: SecretStore) -> None:
        self._sessions = sessions
        self._secrets = secrets

    def build_inputs(self, stack_name: str) -> BuildInputs:
        """Build variables, and stack-wide secrets (decrypted) for build.yml to refer to."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            variables = session.scalars(
                select(Variable)
                .where(Variable.stack_id == stack.id, Variable.kind == "build")
                .order_by(Variable.name)
            ).all()
        return BuildInputs(
            variables={row.name: row.value for row in variables},
            secrets=self._secrets.resolve(stack_name, self._secrets.versions(stack_name, None)),
        )

    def variables(
        self, session: Session, stack_id: int, kind: Kind | None, stage: str | None
    ) -> list[VariableView]:
        query = select(Variable).where(Variable.stack_id == stack_id)
        if kind is not None:
            query = query.where(Variable.kind == kind)
        if stage is not None:
            query = query.where(Variable.stage.in_((EVERY_STAGE, stage)))
        rows = session.scalars(query.order_by(Variable.kind, Variable.stage, Variable.name))
        return [_view(row) for row in rows]

    def change_variables(
        self,
        session: Session,
        stack_id: int,
        kind: Kind,
        stage: str,
        values: Mapping[str, str],
        unset: Iterable[str],
    ) -> list[str]:
        """Store the change (the caller validated names and scope); the names whose value
        really changed."""
        rows = {
            row.name: row
            for row in session.scalars(
                select(Variable).where(
                    Variable.stack_id == stack_id, Variable.kind == kind, Variable.stage == stage
                )
            )
        }
        changed = []
        for name in unset:
            session.delete(rows[name])
            changed.append(name)
        now = datetime.now(UTC)
        for name, value in values.items():
            row = rows.get(name)
            if row is None:
                session.add(
                    Variable(
                        stack_id=stack_id,
                        kind=kind,
                        stage=stage,
                        name=name,
                        value=value,
                        updated_at=now,
                    )
                )
            elif row.value == value:
                continue
            else:
                row.value, row.updated_at = value, now
            changed.append(name)
        session.flush()
        return changed


def _view(row: Variable) -> VariableView:
    return VariableView(
        name=row.name,
        value=row.value,
        kind=row.kind,
        stage=row.stage or None,
        updated_at=row.updated_at,
    )
