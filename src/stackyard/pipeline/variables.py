"""Variables and secrets a stack gets from the platform, and the changes they set off.

``VariableStore`` keeps build and runtime variables and secrets (encrypted by the Vault;
no value is ever read back through the API). Builds, releases and the deploy controller
read through it. ``VariableService`` is what the API calls: it validates a change, stores
it, then redeploys the stages it affects (runtime variables, secrets) or starts a rebuild
(build variables).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.config.models import StageConfig
from stackyard.config.values import RESERVED_PREFIX, RESERVED_VARIABLES
from stackyard.errors import NotFoundError, PermanentError, StackyardError, UsageError
from stackyard.pipeline.stacks import StackService
from stackyard.pipeline.stages import known_stages, require_stage
from stackyard.platform.credentials import _read_private, _write_private
from stackyard.secrets.vault import Vault, new_key
from stackyard.store.models import Secret, SecretVersion, Stack, Variable

if TYPE_CHECKING:
    from stackyard.deploy.service import DeployService
    from stackyard.pipeline.releases import ReleaseService

Kind = Literal["build", "runtime"]
EVERY_STAGE = ""  # the ``stage`` of a stack-wide variable or secret in the store

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Set by Stackyard for build and release specs (see docs/builds-and-releases.md).
_BUILD_PLATFORM = frozenset({"DOCKER_CONFIG", "REGISTRY_USERNAME", "REGISTRY_PASSWORD"})
# Set by Stackyard for every task.
_TASK_PLATFORM = {
    "PORT": "the port each task must listen on",
    "HOST": "the address each task must listen on",
}


def secrets_key(path: Path) -> bytes:
    """The secrets key at ``path``, made on first use (mode 0600, outside the database)."""
    if not path.exists():
        _write_private(path, new_key().decode("ascii") + "\n")
    return _read_private(path).encode("ascii")


def check_name(name: str, kind: Literal["build", "runtime", "secret"]) -> None:
    """UsageError with the reason when ``name`` cannot be a variable (or secret) of ``kind``."""
    what = "secret" if kind == "secret" else f"{kind} variable"
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a valid {what} name: use letters, digits and _, "
            "and do not start with a digit"
        )
    if name in RESERVED_VARIABLES or name.startswith(RESERVED_PREFIX):
        raise UsageError(
            f"'{name}' is reserved: Stackyard sets it in builds, releases and tasks, and "
            "it cannot be overridden",
            hint="pick another name",
        )
    if name in _BUILD_PLATFORM:
        raise UsageError(
            f"'{name}' is reserved: Stackyard sets it in builds and releases to reach its registry",
            hint="pick another name",
        )
    if kind != "build" and name in _TASK_PLATFORM:
        raise UsageError(
            f"'{name}' is reserved for tasks: Stackyard sets it to {_TASK_PLATFORM[name]}",
            hint="read it in your app; pick another name for your own setting",
        )


def _check_value(name: str, value: str) -> None:
    if "\x00" in value:
        raise UsageError(f"the value of {name} contains a NUL character, which no process can get")


# -- reading, for releases (inside their session)


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


def secret_versions(session: Session, stack_id: int, stage: str) -> dict[str, int]:
    """The secrets ``stage`` gets, name -> version: stack-wide ones, then the stage's own."""
    rows = session.scalars(
        select(Secret).where(Secret.stack_id == stack_id, Secret.stage.in_((EVERY_STAGE, stage)))
    ).all()
    ordered = sorted(rows, key=lambda row: (row.stage != EVERY_STAGE, row.name))
    return {row.name: row.version for row in ordered}


# -- views


class VariableView(BaseModel):
    name: str
    value: str
    kind: str  # build | runtime
    stage: str | None  # None: every stage
    updated_at: datetime


class SecretView(BaseModel):
    """A secret as the API shows it: never its value."""

    name: str
    stage: str | None  # None: every stage
    version: int
    updated_at: datetime


class VariableList(BaseModel):
    stack: str
    variables: list[VariableView]


class SecretList(BaseModel):
    stack: str
    secrets: list[SecretView]


class Redeployment(BaseModel):
    """A stage that got a new release (same image, new config) and its deployment."""

    stage: str
    release: int
    deployment: int


class StageProblem(BaseModel):
    """A stage that could not be redeployed, and why (the change itself is stored)."""

    stage: str
    error: str


class ChangeView(BaseModel):
    """What a change stored, and what it set off."""

    stack: str
    kind: str  # build | runtime | secret
    stage: str | None
    changed: list[str]
    secrets: list[SecretView] = []
    redeployed: list[Redeployment] = []
    not_redeployed: list[StageProblem] = []
    rebuild: str | None = None  # what started, e.g. "pipeline run 4"


@dataclass(frozen=True)
class BuildInputs:
    """What a build gets from the platform: build variables, and stack-wide secrets by name
    (for ``env.secrets-manager`` and ``env.parameter-store`` in build.yml)."""

    variables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


def _variable_view(row: Variable) -> VariableView:
    return VariableView(
        name=row.name,
        value=row.value,
        kind=row.kind,
        stage=row.stage or None,
        updated_at=row.updated_at,
    )


def _secret_view(row: Secret) -> SecretView:
    return SecretView(
        name=row.name, stage=row.stage or None, version=row.version, updated_at=row.updated_at
    )


class VariableStore:
    """Variables and encrypted secrets of every stack; decrypted values only on demand."""

    def __init__(self, sessions: sessionmaker[Session], vault: Vault) -> None:
        self._sessions = sessions
        self._vault = vault
        self._masks: dict[str, list[str]] = {}
        self._masks_lock = Lock()

    # -- what builds, releases and tasks read

    def secret_values(self, stack_name: str) -> list[str]:
        """Every value any secret of the stack ever had (all stages, all versions), for
        masking logs: a rollback may bring an old one back."""
        with self._masks_lock:
            cached = self._masks.get(stack_name)
        if cached is not None:
            return cached
        with self._sessions() as session:
            stack_id = session.scalar(select(Stack.id).where(Stack.name == stack_name))
            rows = session.scalars(
                select(SecretVersion).where(SecretVersion.stack_id == stack_id)
            ).all()
        values = [self._decrypt(stack_name, row) for row in rows]
        with self._masks_lock:
            self._masks[stack_name] = values
        return values

    def resolve_secrets(self, stack_name: str, versions: Mapping[str, int]) -> dict[str, str]:
        """name -> decrypted value, for the versions a release snapshot names."""
        if not versions:
            return {}
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            rows = session.scalars(
                select(SecretVersion).where(
                    SecretVersion.stack_id == stack.id,
                    SecretVersion.name.in_(list(versions)),
                )
            ).all()
        found = {(row.name, row.version): row for row in rows}
        values = {}
        for name, version in versions.items():
            row = found.get((name, version))
            if row is None:
                raise PermanentError(
                    f"secret {name} version {version} of stack {stack_name} is not stored",
                    hint=f"set it again: stackyard secrets set {stack_name} {name}",
                )
            values[name] = self._decrypt(stack_name, row)
        return values

    def build_inputs(self, stack_name: str) -> BuildInputs:
        """Build variables, and stack-wide secrets (decrypted) for build.yml to refer to."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            variables = session.scalars(
                select(Variable)
                .where(Variable.stack_id == stack.id, Variable.kind == "build")
                .order_by(Variable.name)
            ).all()
            versions = {
                row.name: row.version
                for row in session.scalars(
                    select(Secret).where(Secret.stack_id == stack.id, Secret.stage == EVERY_STAGE)
                )
            }
        return BuildInputs(
            variables={row.name: row.value for row in variables},
            secrets=self.resolve_secrets(stack_name, versions),
        )

    def _decrypt(self, stack_name: str, row: SecretVersion) -> str:
        return self._vault.decrypt(
            row.ciphertext, what=f"secret {row.name} v{row.version} of stack {stack_name}"
        )

    # -- listing

    def variables(
        self, session: Session, stack_id: int, kind: Kind | None, stage: str | None
    ) -> list[VariableView]:
        query = select(Variable).where(Variable.stack_id == stack_id)
        if kind is not None:
            query = query.where(Variable.kind == kind)
        if stage is not None:
            query = query.where(Variable.stage.in_((EVERY_STAGE, stage)))
        rows = session.scalars(query.order_by(Variable.kind, Variable.stage, Variable.name))
        return [_variable_view(row) for row in rows]

    def secrets(self, session: Session, stack_id: int, stage: str | None) -> list[SecretView]:
        query = select(Secret).where(Secret.stack_id == stack_id)
        if stage is not None:
            query = query.where(Secret.stage.in_((EVERY_STAGE, stage)))
        rows = session.scalars(query.order_by(Secret.stage, Secret.name))
        return [_secret_view(row) for row in rows]

    # -- changing (the caller validated names and scope)

    def change_variables(
        self,
        session: Session,
        stack_id: int,
        kind: Kind,
        stage: str,
        values: Mapping[str, str],
        unset: Iterable[str],
    ) -> list[str]:
        """Store the change; the names whose value really changed."""
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

    def set_secret(
        self, session: Session, stack: Stack, stage: str, name: str, value: str
    ) -> tuple[SecretView, bool]:
        """Store a new version (unless the value is the current one); (view, changed)."""
        row = session.scalar(
            select(Secret).where(
                Secret.stack_id == stack.id, Secret.stage == stage, Secret.name == name
            )
        )
        if row is not None and self._current_value(session, stack, row) == value:
            return _secret_view(row), False
        version = (
            session.scalar(
                select(func.max(SecretVersion.version)).where(
                    SecretVersion.stack_id == stack.id, SecretVersion.name == name
                )
            )
            or 0
        ) + 1
        now = datetime.now(UTC)
        session.add(
            SecretVersion(
                stack_id=stack.id,
                stage=stage,
                name=name,
                version=version,
                ciphertext=self._vault.encrypt(value),
                created_at=now,
            )
        )
        if row is None:
            row = Secret(stack_id=stack.id, stage=stage, name=name, version=version)
            session.add(row)
        row.version, row.updated_at = version, now
        session.flush()
        self._forget(stack.name)
        return _secret_view(row), True

    def unset_secret(self, session: Session, stack: Stack, stage: str, name: str) -> SecretView:
        """Remove the secret from its scope; its versions stay for rollbacks."""
        row = session.scalar(
            select(Secret).where(
                Secret.stack_id == stack.id, Secret.stage == stage, Secret.name == name
            )
        )
        if row is None:
            scope = f"stage {stage}" if stage else "every stage"
            raise NotFoundError(
                f"stack {stack.name} has no secret {name} for {scope}",
                hint=f"list them: stackyard secrets list {stack.name}"
                + (f" --stage {stage}" if stage else ""),
            )
        view = _secret_view(row)
        session.execute(delete(Secret).where(Secret.id == row.id))
        return view

    def _current_value(self, session: Session, stack: Stack, row: Secret) -> str | None:
        stored = session.scalar(
            select(SecretVersion).where(
                SecretVersion.stack_id == stack.id,
                SecretVersion.name == row.name,
                SecretVersion.version == row.version,
            )
        )
        return None if stored is None else self._decrypt(stack.name, stored)

    def _forget(self, stack_name: str) -> None:
        with self._masks_lock:
            self._masks.pop(stack_name, None)


RebuildTrigger = Callable[[str], str]  # stack name -> what started, e.g. "pipeline run 4"


class VariableService:
    """Validate and store variable and secret changes, then redeploy or rebuild."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: VariableStore,
        releases: ReleaseService,
        deploy: DeployService,
        *,
        on_build_variables_changed: RebuildTrigger,
    ) -> None:
        self._sessions = sessions
        self.store = store
        self._releases = releases
        self._deploy = deploy
        self._on_build_variables_changed = on_build_variables_changed

    def secret_values(self, stack_name: str) -> list[str]:
        """Every value any secret of the stack ever had: mask these in its logs."""
        return self.store.secret_values(stack_name)

    # -- variables

    def list_variables(
        self, stack_name: str, *, stage: str | None = None, build: bool = False
    ) -> VariableList:
        """Every variable; with ``stage``, the runtime ones that apply to it; with
        ``build``, the build ones."""
        kind = _kind(stage, build) if (stage or build) else None
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            if stage is not None:
                _check_stage(session, stack, stage)
            views = self.store.variables(session, stack.id, kind, stage)
        return VariableList(stack=stack_name, variables=views)

    def change_variables(
        self,
        stack_name: str,
        *,
        values: Mapping[str, str] | None = None,
        unset: Iterable[str] = (),
        stage: str | None = None,
        build: bool = False,
        created_by: str = "api",
    ) -> ChangeView:
        """Set and unset variables of one scope at once, then redeploy (or rebuild) once."""
        kind = _kind(stage, build)
        values = dict(values or {})
        removed = list(dict.fromkeys(unset))
        if not values and not removed:
            raise UsageError("nothing to change: give at least one variable to set or unset")
        for name in [*values, *removed]:
            check_name(name, kind)
        for name, value in values.items():
            _check_value(name, value)
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            scope = _check_stage(session, stack, stage) if stage is not None else EVERY_STAGE
            existing = {
                v.name
                for v in self.store.variables(session, stack.id, kind, None)
                if (v.stage or EVERY_STAGE) == scope
            }
            missing = [name for name in removed if name not in existing]
            if missing:
                raise NotFoundError(
                    f"stack {stack_name} has no {kind} variable {', '.join(missing)} "
                    f"{_scope_text(scope, build)}",
                    hint=f"list them: stackyard env list {stack_name}",
                )
            changed = self.store.change_variables(session, stack.id, kind, scope, values, removed)
        view = ChangeView(stack=stack_name, kind=kind, stage=stage, changed=changed)
        if not changed:
            return view
        if kind == "build":
            view.rebuild = self._on_build_variables_changed(stack_name)
            return view
        return self._redeploy(view, stage, trigger="variables changed", created_by=created_by)

    # -- secrets

    def list_secrets(self, stack_name: str, *, stage: str | None = None) -> SecretList:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            if stage is not None:
                _check_stage(session, stack, stage)
            views = self.store.secrets(session, stack.id, stage)
        return SecretList(stack=stack_name, secrets=views)

    def set_secret(
        self,
        stack_name: str,
        name: str,
        value: str,
        *,
        stage: str | None = None,
        created_by: str = "api",
    ) -> ChangeView:
        """Store a new encrypted version and redeploy the stages it reaches."""
        check_name(name, "secret")
        _check_value(name, value)
        if value == "":
            raise UsageError(f"secret {name} needs a value; unset it to remove it")
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            scope = _check_stage(session, stack, stage) if stage is not None else EVERY_STAGE
            secret, changed = self.store.set_secret(session, stack, scope, name, value)
        view = ChangeView(
            stack=stack_name,
            kind="secret",
            stage=stage,
            changed=[name] if changed else [],
            secrets=[secret],
        )
        if not changed:
            return view
        return self._redeploy(view, stage, trigger="secrets changed", created_by=created_by)

    def unset_secret(
        self, stack_name: str, name: str, *, stage: str | None = None, created_by: str = "api"
    ) -> ChangeView:
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            scope = _check_stage(session, stack, stage) if stage is not None else EVERY_STAGE
            secret = self.store.unset_secret(session, stack, scope, name)
        view = ChangeView(
            stack=stack_name, kind="secret", stage=stage, changed=[name], secrets=[secret]
        )
        return self._redeploy(view, stage, trigger="secrets changed", created_by=created_by)

    # -- the trigger

    def _redeploy(
        self, view: ChangeView, stage: str | None, *, trigger: str, created_by: str
    ) -> ChangeView:
        """A new release (same digest, fresh config) and its deployment, in each affected
        stage that runs a release; a stage that fails is reported, the others go on."""
        for name in self._affected_stages(view.stack, stage):
            try:
                release = self._releases.reconfigure(
                    view.stack, name, created_by=created_by, reason=trigger
                )
                deployment = self._deploy.deploy(view.stack, name, release.number, trigger=trigger)
            except StackyardError as exc:
                view.not_redeployed.append(StageProblem(stage=name, error=exc.message))
                continue
            view.redeployed.append(
                Redeployment(stage=name, release=release.number, deployment=deployment.number)
            )
        return view

    def _affected_stages(self, stack_name: str, stage: str | None) -> list[str]:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            names = [stage] if stage is not None else known_stages(session, stack.id)
            return [
                name
                for name in names
                if self._releases.deployed(session, stack.id, name) is not None
            ]


def _kind(stage: str | None, build: bool) -> Kind:
    if build and stage is not None:
        raise UsageError(
            "build variables belong to the whole stack, not to a stage",
            hint="drop --stage to set a build variable, or drop --build for a runtime one",
        )
    return "build" if build else "runtime"


def _scope_text(scope: str, build: bool) -> str:
    if build:
        return ""
    return f"for stage {scope}" if scope else "for every stage"


def _check_stage(session: Session, stack: Stack, stage: str) -> str:
    """``stage`` when the stack has it. Before its first successful build a stack's stages
    are unknown: any valid stage name is accepted then, so secrets can come first."""
    if known_stages(session, stack.id):
        require_stage(session, stack, stage)
        return stage
    try:
        StageConfig.model_validate({"name": stage})
    except ValidationError as exc:
        raise UsageError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return stage
