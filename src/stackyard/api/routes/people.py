"""``/api/v1/whoami``, ``/users`` and ``/tokens``: people, their roles and their tokens.

A token is shown once, in the answer that makes it (``POST /users`` makes a person's
first token, ``POST /tokens`` any other); lists show ids, never tokens.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from stackyard.access.people import (
    IssuedToken,
    PeopleService,
    PersonAdded,
    PersonList,
    PersonRemoved,
    PersonView,
    TokenList,
    TokenView,
)
from stackyard.access.rules import Role, Scope
from stackyard.api.auth import Me

router = APIRouter(tags=["people"])


class PersonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: str


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str = Scope.ROLE
    stack: str | None = None
    expires: str | None = None  # 30d, 12h, ...
    label: str = ""
    user: str | None = None  # whose token (an admin may make one for anyone)


class WhoAmI(BaseModel):
    name: str
    role: Role
    token_id: str
    scope: Scope
    stack: str | None
    grants: list[str]


def people(request: Request) -> PeopleService:
    found: PeopleService = request.app.state.context.services.people
    return found


@router.get("/whoami")
def whoami(me: Me) -> WhoAmI:
    return WhoAmI(
        name=me.name,
        role=me.role,
        token_id=me.token_id,
        scope=me.scope,
        stack=me.stack,
        grants=sorted(me.grants()),
    )


@router.get("/users")
def list_people(request: Request) -> PersonList:
    return people(request).list()


@router.post("/users", status_code=201)
def add_person(body: PersonCreate, request: Request, me: Me) -> PersonAdded:
    return people(request).add(body.name, body.role, by=me.name)


@router.get("/users/{user}")
def get_person(user: str, request: Request) -> PersonView:
    return people(request).get(user)


@router.patch("/users/{user}")
def change_role(user: str, body: RoleChange, request: Request, me: Me) -> PersonView:
    return people(request).set_role(user, body.role, by=me.name)


@router.delete("/users/{user}")
def remove_person(user: str, request: Request, me: Me) -> PersonRemoved:
    return people(request).remove(user, by=me.name)


@router.get("/tokens")
def list_tokens(request: Request, me: Me, all: bool = False) -> TokenList:
    return people(request).list_tokens(me, everyone=all)


@router.post("/tokens", status_code=201)
def create_token(body: TokenCreate, request: Request, me: Me) -> IssuedToken:
    return people(request).create_token(
        me,
        scope=body.scope,
        stack=body.stack,
        expires=body.expires,
        label=body.label,
        owner=body.user,
    )


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, request: Request, me: Me) -> TokenView:
    return people(request).revoke(token_id, by=me)
