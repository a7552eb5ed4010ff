"""Variables and secrets a stack gets from the platform, and the changes they set off.

``VariableService`` is what the API and the console call: it checks a change (the name
rule below, the scope), stores it (variables in ``VariableStore``, secrets in the secret
store, encrypted), then has the stages it reaches redeployed (runtime variables, secrets:
``RedeployService.reconfigure``) or starts a rebuild (build variables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from stackyard.config.models import StageConfig
from stackyard.config.values import VariableName
from stackyard.errors import NotFoundError, UsageError
from stackyard.pipeline import platform_variables
from stackyard.pipeline.redeploy import Redeployment, RedeployService, StageProblem
from stackyard.pipeline.variable_store import EVERY_STAGE, Kind, VariableStore, VariableView
from stackyard.secrets.store import SecretStore, SecretView
from stackyard.stacks.service import StackService
from stackyard.stacks.stages import known_stages, require_stage
from stackyard.store.models import Stack

# The rule stackyard.yml's variables follow (config), applied to what the API sets too.
_VARIABLE_NAME: TypeAdapter[str] = TypeAdapter(VariableName)


def check_name(name: str, kind: Literal["build", "runtime", "secret"]) -> None:
    """UsageError with the reason when ``name`` cannot be a variable (or secret) of ``kind``:
    stackyard.yml's rule for variable names, and none the platform sets in builds,
    releases or (but for build variables) tasks."""
    what = "secret" if kind == "secret" else f"{kind} variable"
    try:
        _VARIABLE_NAME.validate_python(name)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"{what} {reason}") from None
    if name in platform_variables.REGISTRY_LOGIN:
        raise UsageError(
            f"{what} '{name}' is reserved: Stackyard sets it in builds and releases to reach "
            "its registry",
            hint="pick another name",
        )
    if kind != "build" and name in platform_variables.TASK:
        raise UsageError(
            f"{what} '{name}' is reserved for tasks: Stackyard sets it to "
            f"{platform_variables.TASK[name]}",
            hint="read it in your app; pick another name for your own setting",
        )


def _check_value(name: str, value: str) -> None:
    if "\x00" in value:
        raise UsageError(f"the value of {name} contains a NUL character, which no process can get")


# -- views


class VariableList(BaseModel):
    stack: str
    variables: list[VariableView]


class SecretList(BaseModel):
    stack: str
    secrets: list[SecretView]


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


RebuildTrigger = Callable[[str, str], str]
"""(stack name, who changed the variables) -> what started, e.g. "pipeline run 4"."""


class VariableService:
    """Validate and store variable and secret changes, then redeploy or rebuild."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: VariableStore,
        secrets: SecretStore,
        redeploy: RedeployService,
        *,
        on_build_variables_changed: RebuildTrigger,
    ) -> None:
        self._sessions = sessions
        self.store = store
        self._secrets = secrets
        self._redeploy = redeploy
        self._on_build_variables_changed = on_build_variables_changed

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
            view.rebuild = self._on_build_variables_changed(stack_name, created_by)
            return view
        return self._redeployed(view, stage, trigger="variables changed", created_by=created_by)

    # -- secrets

    def list_secrets(self, stack_name: str, *, stage: str | None = None) -> SecretList:
        self._check_scope(stack_name, stage)
        return SecretList(stack=stack_name, secrets=self._secrets.secrets(stack_name, stage=stage))

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
        self._check_scope(stack_name, stage)
        secret, changed = self._secrets.set(stack_name, name, value, stage=stage)
        view = ChangeView(
            stack=stack_name,
            kind="secret",
            stage=stage,
            changed=[name] if changed else [],
            secrets=[secret],
        )
        if not changed:
            return view
        return self._redeployed(view, stage, trigger="secrets changed", created_by=created_by)

    def unset_secret(
        self, stack_name: str, name: str, *, stage: str | None = None, created_by: str = "api"
    ) -> ChangeView:
        self._check_scope(stack_name, stage)
        secret = self._secrets.unset(stack_name, name, stage=stage)
        view = ChangeView(
            stack=stack_name, kind="secret", stage=stage, changed=[name], secrets=[secret]
        )
        return self._redeployed(view, stage, trigger="secrets changed", created_by=created_by)

    def _check_scope(self, stack_name: str, stage: str | None) -> None:
        """NotFoundError unless the stack exists and (if given) ``stage`` can be its stage."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            if stage is not None:
                _check_stage(session, stack, stage)

    # -- the trigger

    def _redeployed(
        self, view: ChangeView, stage: str | None, *, trigger: str, created_by: str
    ) -> ChangeView:
        """Redeploy the stages the change reaches (those running a release), and say how."""
        outcome = self._redeploy.reconfigure(
            view.stack, stage, trigger=trigger, created_by=created_by
        )
        view.redeployed, view.not_redeployed = outcome.redeployed, outcome.not_redeployed
        return view


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
