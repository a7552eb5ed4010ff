"""Protected stages, kept on the platform: who may pass a stage's gate, who may deploy it.

Nothing here reads a repository: ``stackyard.yml`` can neither add nor remove protection,
so whoever can push cannot widen it. The API's authorization reads ``of_stack`` for its
decision, the pipeline's planner ``protected_stages`` (a protected stage always has an
approval gate) and the approve path ``get`` (four eyes).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.access.rules import Protection
from stackyard.config.values import StageName
from stackyard.errors import NotFoundError, UsageError
from stackyard.stacks.service import StackService
from stackyard.stacks.stages import known_stages
from stackyard.store.models import Person, Stack, StageProtection

_STAGE = TypeAdapter(StageName)
# Built once: a deploy route reads it on every request.
_OF_STACK = (
    select(StageProtection)
    .join(Stack, Stack.id == StageProtection.stack_id)
    .where(Stack.name == bindparam("stack"))
    .order_by(StageProtection.stage)
)


class ProtectionView(BaseModel):
    stack: str
    stage: str
    approvers: list[str]
    deployers: list[str]
    four_eyes: bool
    updated_at: datetime
    updated_by: str
    # Set when the stage is not (yet) one of the stack's: protecting it is allowed (a
    # stage may come with a later push), but a mistyped name protects nothing.
    note: str | None = None


class ProtectionList(BaseModel):
    protections: list[ProtectionView]


class ProtectionService:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def of_stack(self, stack: str) -> dict[str, Protection]:
        """The stack's protected stages by name (empty for an unknown stack)."""
        with self._sessions() as session:
            return {p.stage: _plain(p) for p in self._rows(session, stack)}

    def protected_stages(self, stack: str) -> frozenset[str]:
        return frozenset(self.of_stack(stack))

    def get(self, stack: str, stage: str) -> Protection | None:
        return self.of_stack(stack).get(stage)

    def list_of(self, stack: str) -> ProtectionList:
        with self._sessions() as session:
            StackService.row(session, stack)  # a clear 404 for an unknown stack
            return ProtectionList(protections=[_view(stack, p) for p in self._rows(session, stack)])

    def protect(
        self,
        stack: str,
        stage: str,
        *,
        approvers: list[str],
        deployers: list[str],
        four_eyes: bool,
        by: str,
    ) -> ProtectionView:
        """Protect ``stage`` (or change its lists). Every name must be a person."""
        _check_stage(stage)
        with self._sessions.begin() as session:
            row = StackService.row(session, stack)
            _check_people(session, [*approvers, *deployers])
            found = session.scalar(
                select(StageProtection).where(
                    StageProtection.stack_id == row.id, StageProtection.stage == stage
                )
            )
            if found is None:
                found = StageProtection(stack_id=row.id, stage=stage)
                session.add(found)
            found.approvers = _unique(approvers)
            found.deployers = _unique(deployers)
            found.four_eyes = four_eyes
            found.updated_by = by
            session.flush()
            view = _view(stack, found)
            known = known_stages(session, row.id)
            if known and stage not in known:
                view.note = (
                    f"{stack} has no stage '{stage}' yet (stages: {', '.join(known)}): it is "
                    "protected once a stage of that name appears; if the name is mistyped, "
                    f"remove it (stackyard protect {stack} --stage {stage} --remove)"
                )
            return view

    def unprotect(self, stack: str, stage: str) -> None:
        with self._sessions.begin() as session:
            row = StackService.row(session, stack)
            found = session.scalar(
                select(StageProtection).where(
                    StageProtection.stack_id == row.id, StageProtection.stage == stage
                )
            )
            if found is None:
                raise NotFoundError(f"stage {stage} of {stack} is not protected")
            session.delete(found)

    @staticmethod
    def _rows(session: Session, stack: str) -> list[StageProtection]:
        return list(session.scalars(_OF_STACK, {"stack": stack}))


def forget_person(session: Session, name: str) -> list[str]:
    """Take ``name`` off every protected stage's lists; the stages it was on."""
    changed = []
    for row in session.scalars(select(StageProtection)):
        if name in row.approvers or name in row.deployers:
            row.approvers = [n for n in row.approvers if n != name]
            row.deployers = [n for n in row.deployers if n != name]
            changed.append(row.stage)
    return changed


def _check_stage(stage: str) -> None:
    try:
        _STAGE.validate_python(stage)
    except ValidationError as exc:
        raise UsageError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from exc


def _check_people(session: Session, names: list[str]) -> None:
    known = set(session.scalars(select(Person.name)))
    unknown = sorted({n for n in names if n not in known})
    if unknown:
        raise UsageError(
            f"no person named {', '.join(unknown)} (people: {', '.join(sorted(known))})",
            hint="add them first with `stackyard users add NAME --role deployer`",
        )


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in names if n.strip()))


def _plain(row: StageProtection) -> Protection:
    return Protection(row.stage, tuple(row.approvers), tuple(row.deployers), row.four_eyes)


def _view(stack: str, row: StageProtection) -> ProtectionView:
    return ProtectionView(
        stack=stack,
        stage=row.stage,
        approvers=list(row.approvers),
        deployers=list(row.deployers),
        four_eyes=row.four_eyes,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )
