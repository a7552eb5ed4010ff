"""``access.rules.decide``: roles, token scopes and protected stages, by equality."""

from __future__ import annotations

import pytest

from stackyard.access.rules import (
    Action,
    Decision,
    Need,
    Principal,
    Protection,
    Role,
    Scope,
    StageFrom,
    Target,
    decide,
    four_eyes_refusal,
    refusal_hint,
)

VIEWER = Principal("carol", Role.VIEWER, "c0c0c0c0c0")
DEPLOYER = Principal("bob", Role.DEPLOYER, "b0b0b0b0b0")
ADMIN = Principal("alice", Role.ADMIN, "a0a0a0a0a0")
PUSH_HELLO = Principal("bob", Role.DEPLOYER, "p0p0p0p0p0", Scope.PUSH, "hello")
DEPLOY_HELLO = Principal("bob", Role.DEPLOYER, "d0d0d0d0d0", Scope.DEPLOY, "hello")
DEPLOY_HELLO_OF_A_VIEWER = Principal("carol", Role.VIEWER, "v0v0v0v0v0", Scope.DEPLOY, "hello")

HELLO = Target("hello")
PROD = Target("hello", ("prod",))
PROTECTED = {"prod": Protection("prod", approvers=("alice",), deployers=("bob",))}


@pytest.mark.parametrize(
    ("principal", "action", "allowed"),
    [
        (VIEWER, Action.READ, True),
        (VIEWER, Action.PUSH, False),
        (VIEWER, Action.DEPLOY, False),
        (DEPLOYER, Action.PUSH, True),
        (DEPLOYER, Action.DEPLOY, True),
        (DEPLOYER, Action.ADMIN, False),
        (ADMIN, Action.ADMIN, True),
        (PUSH_HELLO, Action.PUSH, True),
        (PUSH_HELLO, Action.READ, False),  # a push token pushes, and nothing else
        (PUSH_HELLO, Action.DEPLOY, False),
        (DEPLOY_HELLO, Action.DEPLOY, True),
        (DEPLOY_HELLO, Action.READ, True),
        (DEPLOY_HELLO, Action.ADMIN, False),
        (DEPLOY_HELLO_OF_A_VIEWER, Action.DEPLOY, False),  # never more than the owner's role
        (DEPLOY_HELLO_OF_A_VIEWER, Action.READ, True),
    ],
)
def test_roles_and_scopes_on_a_stack(principal: Principal, action: Action, allowed: bool) -> None:
    assert decide(principal, Need(action), HELLO).allowed is allowed


def test_a_stack_token_works_on_its_own_stack_only() -> None:
    assert decide(PUSH_HELLO, Need(Action.PUSH), Target("other")) == Decision(
        False,
        "push on stack other",
        "forbidden: this takes push on stack other; token p0p0p0p0p0 of bob (deployer), "
        "scoped to push on hello may push on hello",
        role=Role.DEPLOYER,
    )
    platform_wide = Need(Action.READ, stack=None)
    assert decide(DEPLOY_HELLO, platform_wide, Target()).permission == "read on the platform"
    assert decide(VIEWER, platform_wide, Target()).allowed


def test_people_only_routes_refuse_stack_tokens() -> None:
    need = Need(None, stack=None, people_only=True)
    assert decide(VIEWER, need, Target()).allowed
    refused = decide(DEPLOY_HELLO, need, Target())
    assert not refused.allowed
    assert refused.permission == "a person's own token (not one scoped to a stack)"
    assert decide(PUSH_HELLO, Need(None, stack=None), Target()).allowed  # whoami
    channels = Need(Action.DEPLOY, people_only=True)  # adding a notification channel
    assert decide(DEPLOYER, channels, HELLO).allowed
    assert decide(DEPLOY_HELLO, channels, HELLO).permission == (
        "deploy on stack hello, with a person's own token (not one scoped to a stack)"
    )
    assert decide(VIEWER, channels, HELLO).permission == "deploy on stack hello"


def test_a_refusal_names_the_permission() -> None:
    refused = decide(VIEWER, Need(Action.DEPLOY), HELLO)
    assert refused.permission == "deploy on stack hello"
    assert refused.reason == (
        "forbidden: this takes deploy on stack hello; token c0c0c0c0c0 of carol (viewer) may read"
    )


def test_a_refusal_carries_what_was_lacking() -> None:
    assert decide(VIEWER, Need(Action.DEPLOY), HELLO).role is Role.DEPLOYER
    assert decide(VIEWER, Need(Action.PUSH), HELLO).role is Role.DEPLOYER
    assert decide(DEPLOYER, Need(Action.ADMIN), HELLO).role is Role.ADMIN
    assert decide(DEPLOYER, Need(Action.ADMIN, stack=None), Target()).role is Role.ADMIN
    assert decide(PUSH_HELLO, Need(Action.READ), HELLO).role is Role.VIEWER
    dave = Principal("dave", Role.DEPLOYER, "e0e0e0e0e0")
    gate = decide(dave, Need(Action.DEPLOY, stage=StageFrom.PATH, gate=True), PROD, PROTECTED)
    assert (gate.role, gate.protection) == (None, PROTECTED["prod"])
    own = decide(DEPLOY_HELLO, Need(None, stack=None, people_only=True), Target())
    assert (own.role, own.protection) == (None, None)
    assert (decide(VIEWER, Need(Action.READ), HELLO).role, Decision.allow().role) == (None, None)


def test_a_refusal_says_what_to_do_next() -> None:
    assert refusal_hint(VIEWER, decide(VIEWER, Need(Action.DEPLOY), HELLO)) == (
        "ask an admin to do it, or to give carol the deployer role: "
        "stackyard users role carol deployer"
    )
    assert refusal_hint(DEPLOYER, decide(DEPLOYER, Need(Action.ADMIN, stack=None), Target())) == (
        "ask an admin to do it, or to give bob the admin role: stackyard users role bob admin"
    )
    scoped = decide(PUSH_HELLO, Need(Action.PUSH), Target("other"))
    assert refusal_hint(PUSH_HELLO, scoped) == (
        "this token may only push on hello: use your own (stackyard login), or a token made "
        "for this (stackyard tokens create)"
    )
    own = decide(DEPLOY_HELLO, Need(Action.DEPLOY, people_only=True), HELLO)
    assert refusal_hint(DEPLOY_HELLO, own).startswith("this token may only deploy on hello: ")
    listed = decide(DEPLOYER, Need(Action.DEPLOY, stage=StageFrom.PATH, gate=True), PROD, PROTECTED)
    assert refusal_hint(DEPLOYER, listed) == (
        "ask one of those listed, or an admin to list bob there (stackyard protect)"
    )


def test_the_hint_follows_the_data_not_the_permission_s_wording() -> None:
    """A permission worded otherwise gets the same hint: nothing is read from the text."""
    protected = Decision(False, "approving hello/prod", "x", protection=PROTECTED["prod"])
    assert refusal_hint(VIEWER, protected).endswith("to list carol there (stackyard protect)")
    admin = Decision(False, "being one of the admins", "x", role=Role.ADMIN)
    assert refusal_hint(VIEWER, admin).endswith("stackyard users role carol admin")
    deployer = Decision(False, "admin-ish deploy", "x", role=Role.DEPLOYER)
    assert refusal_hint(VIEWER, deployer).endswith("stackyard users role carol deployer")


@pytest.mark.parametrize(
    ("principal", "gate", "allowed"),
    [
        (DEPLOYER, False, True),  # bob is a deployer of prod
        (DEPLOYER, True, False),  # but not an approver
        (ADMIN, True, True),  # alice approves
        (ADMIN, False, False),  # protection applies to admins too
        (Principal("dave", Role.DEPLOYER, "e0e0e0e0e0"), False, False),
        (DEPLOY_HELLO, False, True),  # bob's deploy token: bob is listed
        (VIEWER, True, False),  # protection narrows, never widens: the role still counts
    ],
)
def test_protected_stage_lists(principal: Principal, gate: bool, allowed: bool) -> None:
    need = Need(Action.DEPLOY, stage=StageFrom.PATH, gate=gate)
    assert decide(principal, need, PROD, PROTECTED).allowed is allowed


def test_a_protected_refusal_names_the_list() -> None:
    dave = Principal("dave", Role.DEPLOYER, "e0e0e0e0e0")
    refused = decide(dave, Need(Action.DEPLOY, stage=StageFrom.PATH), PROD, PROTECTED)
    assert refused.permission == "being one of the deployers of protected stage hello/prod"
    assert refused.reason.endswith("(deployers of hello/prod: bob)")


def test_a_change_for_every_stage_needs_every_protected_stage() -> None:
    need = Need(Action.DEPLOY, stage=StageFrom.QUERY)
    dave = Principal("dave", Role.DEPLOYER, "e0e0e0e0e0")
    assert not decide(dave, need, Target("hello", every_stage=True), PROTECTED).allowed
    assert decide(dave, need, Target("hello", ("dev",)), PROTECTED).allowed
    assert decide(dave, need, Target("hello"), PROTECTED).allowed  # the build: no stage
    assert decide(DEPLOYER, need, Target("hello", every_stage=True), PROTECTED).allowed


def test_unprotected_stages_need_the_role_only() -> None:
    need = Need(Action.DEPLOY, stage=StageFrom.PATH, gate=True)
    assert decide(DEPLOYER, need, Target("hello", ("staging",)), PROTECTED).allowed
    assert not decide(VIEWER, need, Target("hello", ("staging",)), PROTECTED).allowed


def test_four_eyes() -> None:
    eyes = Protection("prod", approvers=("alice", "bob"), four_eyes=True)
    assert four_eyes_refusal(eyes, "alice", "bob", 4) is None
    assert four_eyes_refusal(eyes, "bob", "Bob", 4) == (
        "stage prod needs four eyes: bob pushed run 4 and may not also approve it"
    )
    assert "nobody knows who pushed run 4" in str(four_eyes_refusal(eyes, "alice", "", 4))
    assert four_eyes_refusal(Protection("prod"), "bob", "bob", 4) is None
    assert four_eyes_refusal(None, "bob", "bob", 4) is None
