"""Who may do what: roles, token scopes, what a route needs, and the one decision.

Pure: ``decide`` takes the caller (a ``Principal``), what the route needs (a ``Need``),
what the request is about (a ``Target``) and the stack's protected stages, and returns a
``Decision``. The API's one authorization dependency, the console and the git remote all
ask it; ``tests/unit/test_access_rules.py`` tests it by equality, with no store.

- A role grants actions everywhere: ``viewer`` reads; ``deployer`` also pushes and
  deploys (build, release, deploy, roll back, approve, promote, cancel, variables and
  secrets); ``admin`` also administers (people, tokens of others, stacks, protection,
  webhook secrets).
- A token's scope is its owner's role (whatever it is at each request), or one action on
  one stack. A stack token never does more than its owner's role allows.
- Protection only narrows: on a protected stage, deploying (and changing the stage's
  variables) takes being one of its deployers, and passing its gate one of its approvers,
  on top of the role. It applies to admins too: they can change the lists, and the audit
  log shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    READ = "read"
    PUSH = "push"
    DEPLOY = "deploy"
    ADMIN = "admin"


class Role(StrEnum):
    VIEWER = "viewer"
    DEPLOYER = "deployer"
    ADMIN = "admin"


class Scope(StrEnum):
    """What a token may do: its owner's role, or one action on one stack."""

    ROLE = "role"
    READ = "read"
    PUSH = "push"
    DEPLOY = "deploy"


ROLE_GRANTS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset({Action.READ}),
    Role.DEPLOYER: frozenset({Action.READ, Action.PUSH, Action.DEPLOY}),
    Role.ADMIN: frozenset(Action),
}
SCOPE_GRANTS: dict[Scope, frozenset[Action]] = {
    Scope.READ: frozenset({Action.READ}),
    Scope.PUSH: frozenset({Action.PUSH}),
    Scope.DEPLOY: frozenset({Action.READ, Action.PUSH, Action.DEPLOY}),
}
STACK_SCOPES = tuple(SCOPE_GRANTS)


@dataclass(frozen=True)
class Principal:
    """The caller, as its token says: the owner, their role now, and the token's scope."""

    name: str
    role: Role
    token_id: str
    scope: Scope = Scope.ROLE
    stack: str | None = None  # the stack of a stack-scoped token

    @property
    def is_person(self) -> bool:
        """A person's own token (scope: role), as opposed to one scoped to a stack."""
        return self.scope is Scope.ROLE

    def grants(self) -> frozenset[Action]:
        """What the token may do (on its stack only, for a stack token)."""
        own = ROLE_GRANTS[self.role]
        return own if self.is_person else own & SCOPE_GRANTS[self.scope]

    def may(self, action: Action, stack: str | None) -> bool:
        """Whether the token grants ``action`` on ``stack`` (None: the whole platform)."""
        if not self.is_person and (stack is None or stack != self.stack):
            return False
        return action in self.grants()

    def describe(self) -> str:
        """``token ab12cd34ef of carol (viewer)``, ``... scoped to push on hello``."""
        text = f"token {self.token_id} of {self.name} ({self.role})"
        if not self.is_person:
            text += f", scoped to {self.scope} on {self.stack}"
        return text


class StageFrom(StrEnum):
    """Where a route's stage comes from, for the protected-stage check."""

    NONE = "none"  # the route concerns no stage
    PATH = "path"  # the ``stage`` path parameter
    QUERY = "query"  # ``?stage=S``; without it every stage
    QUERY_OR_BUILD = "query or build"  # the same, but ``?build=true`` concerns no stage
    FORM = "form"  # a console form's ``stage`` field
    FORM_SCOPE = "form scope"  # a console form's ``scope``: build, stack or stage:NAME


@dataclass(frozen=True)
class Need:
    """What one route needs: the permission table (``api/permissions.py``) holds one per
    route. ``action`` None: any valid token (``whoami``, log out)."""

    action: Action | None
    stack: str | None = "name"  # the path parameter naming the stack; None: platform-wide
    stage: StageFrom = StageFrom.NONE
    gate: bool = False  # passing a gate: a protected stage's approvers, not its deployers
    people_only: bool = False  # a person's token only, not a stack-scoped one
    redact: tuple[str, ...] = ()  # body fields the audit log never records (secret values)
    audit_body: bool = True  # record the body's fields as the audit entry's parameters

    def permission(self, stack: str | None) -> str:
        """The permission's name, as a 403 says it: ``deploy on stack hello``."""
        if self.action is None:
            return "a valid token"
        if self.stack is None or stack is None:
            return f"{self.action} on the platform"
        return f"{self.action} on stack {stack}"


@dataclass(frozen=True)
class Target:
    """What a request is about: its stack, and the stages it may change."""

    stack: str | None = None
    stages: tuple[str, ...] = ()
    every_stage: bool = False  # e.g. a runtime variable for every stage


@dataclass(frozen=True)
class Protection:
    """A protected stage: who may pass its gate, who may deploy it, and four eyes."""

    stage: str
    approvers: tuple[str, ...] = ()
    deployers: tuple[str, ...] = ()
    four_eyes: bool = False


@dataclass(frozen=True)
class Decision:
    """Allowed, or refused with what it takes and what the caller lacked: the role that
    grants the action, or the protected stage whose list does not name them."""

    allowed: bool
    permission: str = ""  # what it takes, when refused
    reason: str = ""
    role: Role | None = None  # the least role that grants the refused action
    protection: Protection | None = None  # the protected stage whose list lacks the caller

    @classmethod
    def allow(cls) -> Decision:
        return cls(True)


def decide(
    principal: Principal,
    need: Need,
    target: Target,
    protections: Mapping[str, Protection] | None = None,
) -> Decision:
    """Whether ``principal`` may do what ``need`` describes to ``target``."""
    stack = target.stack if need.stack is not None else None
    if need.people_only and not principal.is_person:
        own = "a person's own token (not one scoped to a stack)"
        if need.action is not None:
            own = f"{need.permission(stack)}, with {own}"
        return _refuse(principal, own)
    if need.action is None:
        return Decision.allow()
    if not principal.may(need.action, stack):
        return _refuse(principal, need.permission(stack), role=_least_role(need.action))
    if need.action is not Action.DEPLOY or not protections or target.stack is None:
        return Decision.allow()
    stages = sorted(protections) if target.every_stage else list(target.stages)
    for stage in stages:
        protection = protections.get(stage)
        if protection is None:
            continue
        listed = protection.approvers if need.gate else protection.deployers
        if principal.name not in listed:
            which = "approvers" if need.gate else "deployers"
            return _refuse(
                principal,
                f"being one of the {which} of protected stage {target.stack}/{stage}",
                f"{which} of {target.stack}/{stage}: {', '.join(listed) or 'nobody'}",
                protection=protection,
            )
    return Decision.allow()


def _least_role(action: Action) -> Role:
    return next(role for role in Role if action in ROLE_GRANTS[role])


def _refuse(
    principal: Principal,
    permission: str,
    listed: str = "",
    *,
    role: Role | None = None,
    protection: Protection | None = None,
) -> Decision:
    grants = ", ".join(sorted(principal.grants())) or "nothing"
    where = f" on {principal.stack}" if not principal.is_person else ""
    reason = f"forbidden: this takes {permission}; {principal.describe()} may {grants}{where}"
    if listed:
        reason += f" ({listed})"
    return Decision(False, permission, reason, role, protection)


def refusal_hint(principal: Principal, decision: Decision) -> str:
    """What the refused caller can do next: who to ask, or which token to use.

    Built from what the refusal says was lacking (``decision.role`` or
    ``decision.protection``), never from the permission's wording."""
    if not principal.is_person:
        return (
            f"this token may only {principal.scope} on {principal.stack}: use your own "
            "(stackyard login), or a token made for this (stackyard tokens create)"
        )
    if decision.protection is not None:
        return (
            "ask one of those listed, or an admin to list "
            f"{principal.name} there (stackyard protect)"
        )
    role = decision.role or Role.ADMIN  # nothing named: an admin may do everything
    return (
        f"ask an admin to do it, or to give {principal.name} the {role} role: "
        f"stackyard users role {principal.name} {role}"
    )


def four_eyes_refusal(
    protection: Protection | None, approver: str, pushed_by: str, run: int
) -> str | None:
    """Why ``approver`` may not pass a four-eyes gate for run ``run``; None if they may.

    The pusher is who pushed the commit (a git push token's owner, or the pusher a webhook
    payload names) or who started the run. A run whose pusher is unknown (started by
    polling) cannot pass a four-eyes gate: nobody can show the approver is someone else.
    """
    if protection is None or not protection.four_eyes:
        return None
    if not pushed_by:
        return (
            f"stage {protection.stage} needs four eyes, and nobody knows who pushed run "
            f"{run} (it was started by polling)"
        )
    if pushed_by.lower() == approver.lower():
        return (
            f"stage {protection.stage} needs four eyes: {approver} pushed run {run} and "
            "may not also approve it"
        )
    return None


def four_eyes_release_refusal(
    protection: Protection | None, releaser: str, commit: str, pushers: Mapping[int, str]
) -> str | None:
    """Why ``releaser`` may not release the image of ``commit`` to a four-eyes stage by
    hand; None if they may. ``pushers`` are the runs of that commit and who pushed (or
    started) each.

    Without this, the pusher could skip the gate their run waits at: `stackyard release
    --commit` of their own commit is a second way into the stage. Someone else must release
    it, or approve the run; a commit nobody is known to have pushed (polled, or built by
    hand) cannot be shown to be someone else's, as at the gate.
    """
    if protection is None or not protection.four_eyes:
        return None
    short = commit[:12]
    own = sorted(number for number, by in pushers.items() if by.lower() == releaser.lower())
    if own:
        runs = ", ".join(str(number) for number in own)
        return (
            f"stage {protection.stage} needs four eyes: {releaser} pushed commit {short} "
            f"(run {runs}) and may not also release it to {protection.stage}"
        )
    if not any(pushers.values()):
        return (
            f"stage {protection.stage} needs four eyes, and nobody knows who pushed commit "
            f"{short} (no run of it names a pusher: it was polled or built by hand)"
        )
    return None
