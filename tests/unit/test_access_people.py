"""People and tokens on a real SQLite store: shown once, stored as a keyed hash, scoped,
expiring, revoked at once; the last admin stays; the first admin token of older versions
keeps working until it is revoked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DatabaseError

from stackyard.access.audit import AuditLog, AuditRecord
from stackyard.access.people import AuthFailed, PeopleService, Refusal
from stackyard.access.rules import Principal, Role, Scope
from stackyard.access.tokens import (
    TokenHasher,
    TokenMaskFilter,
    mask_tokens,
    pepper_file,
    token_id_of,
)
from stackyard.errors import AccessDenied, NotFoundError, UsageError
from stackyard.store.models import AuditEntry, Build, Stack, Token
from tests.access_yard import BOOTSTRAP, AccessYard, access_yard


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[AccessYard]:
    with access_yard(tmp_path) as found:
        yield found


def people(yard: AccessYard) -> PeopleService:
    return yard.services.people


def test_a_new_person_gets_a_token_that_works_and_is_stored_as_a_hash(yard: AccessYard) -> None:
    added = people(yard).add("erin", "viewer", by="alice")
    assert added.token.startswith(f"sy_{added.token_id}_")
    assert token_id_of(added.token) == added.token_id
    found = people(yard).authenticate(added.token)
    assert found == Principal("erin", Role.VIEWER, added.token_id, Scope.ROLE, None)
    with yard.sessions() as session:
        row = session.get(Token, added.token_id)
        assert row is not None
        assert row.hash != added.token
        assert len(row.hash) == 64
    database = Path(yard.settings.database_url.removeprefix("sqlite:///"))
    secret = added.token.split("_", 2)[2]
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert secret.encode() not in stored  # nowhere in the database, its WAL included
    assert [p.name for p in people(yard).list().people] == [
        "admin",
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
    ]


def test_a_wrong_secret_for_a_real_id_is_unknown(yard: AccessYard) -> None:
    token = yard.tokens["viewer"]
    token_id = token_id_of(token)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert people(yard).authenticate(forged) == AuthFailed(Refusal.UNKNOWN, token_id)
    assert people(yard).authenticate("nonsense") == AuthFailed(Refusal.UNKNOWN, None)


def test_the_hash_is_keyed_by_the_pepper_outside_the_database(tmp_path: Path) -> None:
    one = TokenHasher(lambda: pepper_file(tmp_path / "one"))
    two = TokenHasher(lambda: pepper_file(tmp_path / "two"))
    assert one.digest("sy_0123456789_x") != two.digest("sy_0123456789_x")
    assert one.matches("sy_0123456789_x", one.digest("sy_0123456789_x"))
    assert (tmp_path / "one").stat().st_mode & 0o777 == 0o600


def test_a_role_change_counts_from_the_next_request(yard: AccessYard) -> None:
    assert yard.principal("deployer").role is Role.DEPLOYER
    people(yard).set_role("bob", "viewer", by="alice")
    assert yard.principal("deployer").role is Role.VIEWER
    assert yard.principal("push hello").grants() == frozenset()  # push is beyond a viewer


def test_removing_a_person_revokes_their_tokens_at_once(yard: AccessYard) -> None:
    yard.services.protection.protect(
        "hello", "prod", approvers=["carol", "alice"], deployers=["carol"], four_eyes=False, by="x"
    )
    removed = people(yard).remove("carol", by="alice")
    assert sorted(removed.revoked) == sorted(
        token_id_of(yard.tokens[label]) for label in ("viewer", "read hello")
    )
    assert removed.unprotected == ["prod"]
    for label in ("viewer", "read hello"):
        refused = people(yard).authenticate(yard.tokens[label])
        assert isinstance(refused, AuthFailed)
        assert refused.reason is Refusal.REVOKED
    prod = yard.services.protection.get("hello", "prod")
    assert prod is not None
    assert (prod.approvers, prod.deployers) == (("alice",), ())
    owners = {
        t.owner for t in people(yard).list_tokens(yard.principal("admin"), everyone=True).tokens
    }
    assert "carol" in owners  # the tokens keep their owner's name for the record


def test_the_last_admin_cannot_go(yard: AccessYard) -> None:
    people(yard).remove("admin", by="alice")  # two admins: one may go
    with pytest.raises(UsageError, match="alice is the last admin; cannot remove them"):
        people(yard).remove("alice", by="alice")
    with pytest.raises(UsageError, match="alice is the last admin; cannot take the admin role"):
        people(yard).set_role("alice", "deployer", by="alice")
    assert people(yard).get("alice").role is Role.ADMIN


def test_bad_names_roles_and_duplicates(yard: AccessYard) -> None:
    with pytest.raises(UsageError, match="'Eve!' is not a valid person name"):
        people(yard).add("Eve!", "viewer", by="alice")
    with pytest.raises(UsageError, match="'root' is not a role"):
        people(yard).add("eve", "root", by="alice")
    with pytest.raises(UsageError, match="a person named bob already exists"):
        people(yard).add("bob", "viewer", by="alice")
    with pytest.raises(NotFoundError, match="no person named zed"):
        people(yard).set_role("zed", "viewer", by="alice")


def test_a_stack_token_does_no_more_than_its_owner(yard: AccessYard) -> None:
    carol, bob = yard.principal("viewer"), yard.principal("deployer")
    with pytest.raises(AccessDenied, match="carol is a viewer: a push token on hello") as denied:
        people(yard).create_token(carol, scope="push", stack="hello")
    assert denied.value.permission == "push on stack hello"
    with pytest.raises(AccessDenied, match="only an admin makes tokens for others"):
        people(yard).create_token(bob, scope="push", stack="hello", owner="carol")
    with pytest.raises(AccessDenied, match="cannot make tokens"):
        people(yard).create_token(yard.principal("push hello"), scope="push", stack="hello")
    with pytest.raises(UsageError, match="a push token is for one stack"):
        people(yard).create_token(bob, scope="push")
    with pytest.raises(UsageError, match="'write' is not a token scope"):
        people(yard).create_token(bob, scope="write", stack="hello")
    with pytest.raises(NotFoundError, match="no stack named 'nope'"):
        people(yard).create_token(bob, scope="push", stack="nope")
    made = people(yard).create_token(
        yard.principal("admin"), scope="push", stack="hello", owner="bob"
    )
    assert (made.info.owner, made.info.scope, made.info.stack) == ("bob", Scope.PUSH, "hello")


def test_an_expired_token_is_refused_as_expired(yard: AccessYard) -> None:
    made = people(yard).create_token(yard.principal("deployer"), scope="role", expires="30d")
    assert made.info.expires_at is not None
    assert made.info.expires_at - datetime.now(UTC) > timedelta(days=29)
    with yard.sessions.begin() as session:
        past = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(update(Token).where(Token.id == made.info.id).values(expires_at=past))
    assert people(yard).authenticate(made.token) == AuthFailed(Refusal.EXPIRED, made.info.id)
    listed = people(yard).list_tokens(yard.principal("deployer")).tokens
    assert {t.id: t.status for t in listed}[made.info.id] == "expired"
    with pytest.raises(UsageError, match="expires: 'soon' is not a duration"):
        people(yard).create_token(yard.principal("deployer"), scope="role", expires="soon")


def test_revoking_own_and_others_tokens(yard: AccessYard) -> None:
    bob, carol = yard.principal("deployer"), yard.principal("viewer")
    push_id = token_id_of(yard.tokens["push hello"])
    assert push_id is not None
    with pytest.raises(AccessDenied, match=f"token {push_id} is bob's"):
        people(yard).revoke(push_id, by=carol)
    assert people(yard).revoke(push_id, by=bob).status == "revoked"
    assert people(yard).authenticate(yard.tokens["push hello"]) == AuthFailed(
        Refusal.REVOKED, push_id
    )
    read_id = token_id_of(yard.tokens["read hello"])
    assert read_id is not None
    assert people(yard).revoke(read_id, by=yard.principal("admin")).revoked_by == "alice"
    with pytest.raises(AccessDenied, match="only an admin lists everyone's tokens"):
        people(yard).list_tokens(bob, everyone=True)
    assert {t.owner for t in people(yard).list_tokens(bob).tokens} == {"bob"}


def test_the_bootstrap_token_of_an_older_version_keeps_working(yard: AccessYard) -> None:
    found = people(yard).authenticate(BOOTSTRAP)
    assert found == Principal("admin", Role.ADMIN, "bootstrap", Scope.ROLE, None)
    people(yard).ensure_bootstrap("a-new-admin-token-file")  # the file was replaced
    assert isinstance(people(yard).authenticate(BOOTSTRAP), AuthFailed)
    assert people(yard).authenticate("a-new-admin-token-file") == found
    people(yard).revoke("bootstrap", by=yard.principal("admin"))
    assert people(yard).bootstrap_revoked()
    people(yard).ensure_bootstrap("yet-another-file")  # revoked stays revoked
    assert people(yard).authenticate("yet-another-file") == AuthFailed(Refusal.UNKNOWN, None)


def test_last_used_and_last_seen_are_written(yard: AccessYard) -> None:
    yard.principal("viewer")
    carol = people(yard).get("carol")
    assert carol.last_seen_at is not None
    listed = people(yard).list_tokens(yard.principal("viewer")).tokens
    assert any(t.last_used_at is not None for t in listed)


def test_tokens_are_masked_in_text_and_logs(yard: AccessYard) -> None:
    token = yard.tokens["viewer"]
    line = f"push from http://stackyard:{token}@127.0.0.1/git/hello.git with {BOOTSTRAP}"
    assert mask_tokens(line, [BOOTSTRAP]) == (
        "push from http://stackyard:sy_***@127.0.0.1/git/hello.git with sy_***"
    )
    import logging

    record = logging.LogRecord("x", logging.WARNING, "f", 1, "token %s and %s", (token, 3), None)
    assert TokenMaskFilter([BOOTSTRAP]).filter(record)
    assert record.getMessage() == "token sy_*** and 3"


def test_the_audit_log_is_append_only_and_pruned(yard: AccessYard) -> None:
    log = AuditLog(yard.sessions, retention_days=30)
    log.record(AuditRecord(action="deploy", result="ok", actor="bob", stack="hello"))
    with yard.sessions.begin() as session:
        old = datetime.now(UTC) - timedelta(days=31)
        session.add(AuditEntry(action="old", result="ok", at=old, parameters={}))
    with (
        pytest.raises(DatabaseError, match="the audit log is append-only"),
        yard.sessions.begin() as session,
    ):
        session.execute(text("UPDATE audit_log SET actor = 'mallory'"))
    assert log.prune() == 1
    actions = [e.action for e in log.query().entries]
    assert "old" not in actions
    assert [e.actor for e in log.query(actor="bob").entries] == ["bob"]
    assert log.query(stack="other").entries == []
    with yard.sessions() as session:
        assert (
            session.scalar(select(AuditEntry.actor).where(AuditEntry.action == "deploy")) == "bob"
        )


def test_protecting_a_stage_the_stack_lacks_is_kept_with_a_warning(yard: AccessYard) -> None:
    path = "/api/v1/stacks/hello/stages/{}/protection"
    body = {"approvers": ["carol"], "deployers": [], "four_eyes": False}
    before = yard.client.put(path.format("prdo"), json=body, headers=yard.auth("admin"))
    assert (before.status_code, before.json()["note"]) == (200, None)  # no build: who knows
    with yard.sessions.begin() as session:
        hello = session.scalar(select(Stack).where(Stack.name == "hello"))
        assert hello is not None
        stages = [{"name": "dev"}, {"name": "prod"}]
        session.add(Build(stack_id=hello.id, number=1, status="SUCCEEDED",
                          config={"stages": stages}))  # fmt: skip
    known = yard.client.put(path.format("prod"), json=body, headers=yard.auth("admin"))
    assert known.json()["note"] is None
    mistyped = yard.client.put(path.format("prdo"), json=body, headers=yard.auth("admin"))
    assert mistyped.status_code == 200
    assert mistyped.json()["note"].startswith("hello has no stage 'prdo' yet (stages: dev, prod)")
    assert "stackyard protect hello --stage prdo --remove" in mistyped.json()["note"]
