"""People and their tokens: add, change, remove; make, list and revoke tokens; and check
the token of each request (``authenticate``).

Every request reads its token's row (one indexed query by the token's public id), so a
revocation, a removed person or a changed role counts from the next request on. The
token's text is never stored: only its keyed hash (``tokens.TokenHasher``).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import Executable, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from stackyard.access.durations import parse_duration
from stackyard.access.protection import forget_person
from stackyard.access.rules import (
    ROLE_GRANTS,
    SCOPE_GRANTS,
    Principal,
    Role,
    Scope,
)
from stackyard.access.tokens import TokenHasher, make_token, token_id_of
from stackyard.errors import AccessDenied, NotFoundError, UsageError
from stackyard.stacks.service import StackService
from stackyard.store.models import Person, Stack, Token

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
BOOTSTRAP_ID = "bootstrap"
BOOTSTRAP_PERSON = "admin"
SEEN_EVERY = 60.0
"""Seconds between writes of a token's "last used" (and its owner's "last seen")."""


_LOOKUP = (
    select(
        Token.id,
        Token.hash,
        Token.scope,
        Token.expires_at,
        Token.revoked_at,
        Person.name,
        Person.role,
        Stack.name,
    )
    .outerjoin(Person, Person.id == Token.person_id)
    .outerjoin(Stack, Stack.id == Token.stack_id)
)
# Built once: making the statement cost more than running it (docs/benchmarks.md).
_BY_ID = _LOOKUP.where(Token.id == bindparam("token_id"))
_BY_HASH = _LOOKUP.where(Token.hash == bindparam("hash"))


class Refusal(StrEnum):
    """Why a token was not accepted: the text of the 401."""

    UNKNOWN = "token unknown"
    EXPIRED = "token expired"
    REVOKED = "token revoked"


@dataclass(frozen=True)
class AuthFailed:
    reason: Refusal
    token_id: str | None  # when the token named one (for its rate limit and the audit log)


class PersonView(BaseModel):
    name: str
    role: Role
    created_at: datetime
    created_by: str
    last_seen_at: datetime | None
    tokens: int  # active ones


class PersonList(BaseModel):
    people: list[PersonView]


class TokenView(BaseModel):
    id: str
    owner: str
    label: str
    scope: Scope
    stack: str | None
    status: str  # active | expired | revoked
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str
    last_used_at: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenView]


class IssuedToken(BaseModel):
    """A token just made. ``token`` is shown this once and never again."""

    token: str
    info: TokenView


class PersonAdded(BaseModel):
    person: PersonView
    token: str
    token_id: str


class PersonRemoved(BaseModel):
    name: str
    revoked: list[str]
    unprotected: list[str]  # protected stages whose lists named them


def check_person_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a valid person name",
            hint="use 1 to 40 lowercase letters, digits, '.', '_' and '-', starting with a "
            "letter or digit (e.g. alice, dave.smith)",
        )
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError as exc:
        raise UsageError(
            f"'{role}' is not a role", hint=f"use one of {', '.join(r.value for r in Role)}"
        ) from exc


class PeopleService:
    def __init__(self, sessions: sessionmaker[Session], hasher: TokenHasher) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()

    # -- each request

    def authenticate(self, text: str) -> Principal | AuthFailed:
        """The caller a token stands for, or why it is refused (unknown, expired, revoked)."""
        token_id = token_id_of(text)
        if token_id is not None:
            return self._check(_BY_ID, {"token_id": token_id}, token_id, text)
        # A legacy token (the first admin token) has no id: it is found by its keyed hash.
        return self._check(_BY_HASH, {"hash": self._hasher.digest(text)}, None, None)

    def session_principal(self, token_id: str) -> Principal | AuthFailed:
        """The caller of a console session, which holds the id of the token it was opened
        with (its cookie is signed by the server): refused once that token is."""
        return self._check(_BY_ID, {"token_id": token_id}, token_id, None)

    def _check(
        self, query: Executable, values: dict[str, str], token_id: str | None, text: str | None
    ) -> Principal | AuthFailed:
        with self._sessions() as session:
            row = session.execute(query, values).first()
        if row is None:
            return AuthFailed(Refusal.UNKNOWN, token_id)
        found_id, stored, scope, expires, revoked, person, role, stack = row
        if text is not None and not self._hasher.matches(text, stored):
            return AuthFailed(Refusal.UNKNOWN, token_id)
        if revoked is not None or person is None:
            return AuthFailed(Refusal.REVOKED, found_id)
        if expires is not None and expires <= _now():
            return AuthFailed(Refusal.EXPIRED, found_id)
        self._mark_seen(found_id)
        return Principal(person, Role(role), found_id, Scope(scope), stack)

    def _mark_seen(self, token_id: str) -> None:
        """Write "last used" at most every SEEN_EVERY seconds per token: not a write per
        request."""
        now = time.monotonic()
        with self._seen_lock:
            if now - self._seen.get(token_id, -SEEN_EVERY) < SEEN_EVERY:
                return
            self._seen[token_id] = now
        moment = _now()
        with self._sessions.begin() as session:
            session.execute(update(Token).where(Token.id == token_id).values(last_used_at=moment))
            owner = select(Token.person_id).where(Token.id == token_id).scalar_subquery()
            session.execute(update(Person).where(Person.id == owner).values(last_seen_at=moment))

    # -- the first admin

    def bootstrap_revoked(self) -> bool:
        with self._sessions() as session:
            row = session.get(Token, BOOTSTRAP_ID)
            return row is not None and (row.revoked_at is not None or row.person_id is None)

    def ensure_bootstrap(self, text: str) -> None:
        """Register ``text`` (the ``admin-token`` file's) as the bootstrap admin token of a
        person named ``admin``, or make it the bootstrap token's new value. Nothing when
        that token was revoked: the team replaced it with named people."""
        if self.bootstrap_revoked():
            return
        digest = self._hasher.digest(text)
        with self._sessions.begin() as session:
            row = session.get(Token, BOOTSTRAP_ID)
            if row is not None:
                row.hash = digest
                return
            person = session.scalar(select(Person).where(Person.name == BOOTSTRAP_PERSON))
            if person is None:
                person = Person(name=BOOTSTRAP_PERSON, role=Role.ADMIN, created_by="stackyard up")
                session.add(person)
                session.flush()
            session.add(
                Token(
                    id=BOOTSTRAP_ID,
                    person_id=person.id,
                    owner=person.name,
                    label="the bootstrap admin token (admin-token)",
                    scope=Scope.ROLE,
                    hash=digest,
                    created_by="stackyard up",
                )
            )

    # -- people

    def add(self, name: str, role: str, *, by: str) -> PersonAdded:
        """A new person, and their first token (scope: their role), shown once."""
        check_person_name(name)
        checked = check_role(role)
        with self._sessions.begin() as session:
            if session.scalar(select(Person.id).where(Person.name == name)) is not None:
                raise UsageError(
                    f"a person named {name} already exists",
                    hint=f"change their role with `stackyard users role {name} ROLE`",
                )
            person = Person(name=name, role=checked, created_by=by)
            session.add(person)
            session.flush()
            issued = self._issue(session, person, Scope.ROLE, None, None, "first token", by)
            view = _person_view(session, person)
        return PersonAdded(person=view, token=issued.token, token_id=issued.info.id)

    def list(self) -> PersonList:
        with self._sessions() as session:
            people = session.scalars(select(Person).order_by(Person.name)).all()
            return PersonList(people=[_person_view(session, p) for p in people])

    def get(self, name: str) -> PersonView:
        with self._sessions() as session:
            return _person_view(session, _person(session, name))

    def set_role(self, name: str, role: str, *, by: str) -> PersonView:
        checked = check_role(role)
        with self._sessions.begin() as session:
            person = _person(session, name)
            if person.role == Role.ADMIN and checked != Role.ADMIN:
                _refuse_last_admin(session, name, "take the admin role from")
            person.role = checked
            session.flush()
            return _person_view(session, person)

    def remove(self, name: str, *, by: str) -> PersonRemoved:
        """Remove a person: their tokens are revoked at once; the audit log keeps the name."""
        with self._sessions.begin() as session:
            person = _person(session, name)
            if person.role == Role.ADMIN:
                _refuse_last_admin(session, name, "remove")
            revoked = []
            for token in session.scalars(select(Token).where(Token.person_id == person.id)):
                if token.revoked_at is None:
                    token.revoked_at, token.revoked_by = _now(), by
                    revoked.append(token.id)
            unprotected = forget_person(session, name)
            session.delete(person)
        return PersonRemoved(name=name, revoked=revoked, unprotected=unprotected)

    # -- tokens

    def create_token(
        self,
        by: Principal,
        *,
        scope: str,
        stack: str | None = None,
        expires: str | None = None,
        label: str = "",
        owner: str | None = None,
    ) -> IssuedToken:
        """A new token of ``owner`` (default: the caller); an admin may make one for
        anyone. A stack token may not do more than its owner's role."""
        if not by.is_person:
            raise AccessDenied(
                "a token scoped to a stack cannot make tokens", permission="a person's token"
            )
        owner = owner or by.name
        if owner != by.name and by.role is not Role.ADMIN:
            raise AccessDenied(
                f"only an admin makes tokens for others; {by.name} is a {by.role}",
                permission="admin on the platform",
            )
        checked = _scope(scope, stack)
        lifetime = parse_duration(expires, "expires") if expires else None
        with self._sessions.begin() as session:
            person = _person(session, owner)
            stack_row = StackService.row(session, stack) if stack else None
            role = Role(person.role)
            if checked is not Scope.ROLE and not SCOPE_GRANTS[checked] <= ROLE_GRANTS[role]:
                raise AccessDenied(
                    f"{owner} is a {role}: a {checked} token on {stack} would do more than "
                    "their role allows",
                    permission=f"{checked} on stack {stack}",
                )
            return self._issue(session, person, checked, stack_row, lifetime, label, by.name)

    def _issue(
        self,
        session: Session,
        person: Person,
        scope: Scope,
        stack: Stack | None,
        lifetime: timedelta | None,
        label: str,
        by: str,
    ) -> IssuedToken:
        new = make_token()
        row = Token(
            id=new.id,
            person_id=person.id,
            owner=person.name,
            label=label[:255],
            scope=scope,
            stack_id=stack.id if stack else None,
            hash=self._hasher.digest(new.text),
            created_by=by,
            created_at=_now(),
            expires_at=_now() + lifetime if lifetime else None,
        )
        session.add(row)
        session.flush()
        return IssuedToken(token=new.text, info=_token_view(row, stack.name if stack else None))

    def list_tokens(self, by: Principal, *, everyone: bool = False) -> TokenList:
        """The caller's own tokens; with ``everyone``, an admin sees every token."""
        if everyone and by.role is not Role.ADMIN:
            raise AccessDenied(
                f"only an admin lists everyone's tokens; {by.name} is a {by.role}",
                permission="admin on the platform",
            )
        query = (
            select(Token, Stack.name)
            .outerjoin(Stack, Stack.id == Token.stack_id)
            .order_by(Token.owner, Token.created_at)
        )
        if not everyone:
            query = query.where(Token.owner == by.name)
        with self._sessions() as session:
            return TokenList(tokens=[_token_view(t, s) for t, s in session.execute(query)])

    def revoke(self, token_id: str, *, by: Principal) -> TokenView:
        """Revoke a token: the caller's own, or anyone's for an admin. At once."""
        with self._sessions.begin() as session:
            found = session.execute(
                select(Token, Stack.name)
                .outerjoin(Stack, Stack.id == Token.stack_id)
                .where(Token.id == token_id)
            ).first()
            if found is None:
                raise NotFoundError(
                    f"no token {token_id}", hint="see the ids with `stackyard tokens`"
                )
            token, stack = found
            if token.owner != by.name and by.role is not Role.ADMIN:
                raise AccessDenied(
                    f"token {token_id} is {token.owner}'s; only they or an admin revoke it",
                    permission="admin on the platform",
                )
            if token.revoked_at is None:
                token.revoked_at, token.revoked_by = _now(), by.name
            return _token_view(token, stack)


def _scope(scope: str, stack: str | None) -> Scope:
    try:
        checked = Scope(scope)
    except ValueError as exc:
        raise UsageError(
            f"'{scope}' is not a token scope",
            hint="use role (the owner's role), or read, push or deploy with --stack",
        ) from exc
    if checked is Scope.ROLE and stack:
        raise UsageError("a token scoped to a stack needs an action: --scope read, push or deploy")
    if checked is not Scope.ROLE and not stack:
        raise UsageError(f"a {checked} token is for one stack: give --stack NAME")
    return checked


def _person(session: Session, name: str) -> Person:
    person = session.scalar(select(Person).where(Person.name == name))
    if person is None:
        names = ", ".join(session.scalars(select(Person.name).order_by(Person.name)))
        raise NotFoundError(
            f"no person named {name} (people: {names or 'none'})",
            hint=f"add them with `stackyard users add {name} --role viewer`",
        )
    return person


def _refuse_last_admin(session: Session, name: str, what: str) -> None:
    admins = session.scalar(select(func.count()).where(Person.role == Role.ADMIN))
    if (admins or 0) <= 1:
        raise UsageError(
            f"{name} is the last admin; cannot {what} them",
            hint="make someone else an admin first: `stackyard users add NAME --role admin`",
        )


def _active(session: Session, person_id: int) -> int:
    now = _now()
    count = session.scalar(
        select(func.count())
        .select_from(Token)
        .where(
            Token.person_id == person_id,
            Token.revoked_at.is_(None),
            (Token.expires_at.is_(None)) | (Token.expires_at > now),
        )
    )
    return count or 0


def _person_view(session: Session, person: Person) -> PersonView:
    return PersonView(
        name=person.name,
        role=Role(person.role),
        created_at=person.created_at,
        created_by=person.created_by,
        last_seen_at=person.last_seen_at,
        tokens=_active(session, person.id),
    )


def _token_view(token: Token, stack: str | None) -> TokenView:
    status = "active"
    if token.revoked_at is not None:
        status = "revoked"
    elif token.expires_at is not None and token.expires_at <= _now():
        status = "expired"
    return TokenView(
        id=token.id,
        owner=token.owner,
        label=token.label,
        scope=Scope(token.scope),
        stack=stack,
        status=status,
        created_at=token.created_at,
        created_by=token.created_by,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        revoked_by=token.revoked_by,
        last_used_at=token.last_used_at,
    )


def _now() -> datetime:
    return datetime.now(UTC)
