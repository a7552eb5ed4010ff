"""The host names of a stack's stages and their certificates: `stackyard domains`.

DeployService calls it. Names come from stackyard.yml (``host``, ``domains``, the base
domain) and from `stackyard domains add` (stored on the stage's route row); the router
says where each certificate stands.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from stackyard.config.values import check_host
from stackyard.deploy.keys import StageKey, stage_route
from stackyard.errors import NotFoundError, UsageError
from stackyard.router.base import Certificate, Route, Router
from stackyard.store.models import Stack, StageRoute


class DomainView(BaseModel):
    stage: str
    name: str
    tls: str
    state: str  # pending, valid, expired, failed, none (plain HTTP)
    description: str  # "valid (expires …)", "failed: <the CA's answer>", …
    issuer: str = ""
    expires: datetime | None = None
    error: str = ""
    hint: str = ""
    added: bool = False  # by `stackyard domains add` (else from stackyard.yml)


class DomainList(BaseModel):
    stack: str
    domains: list[DomainView]


def route_of(stack: str, row: StageRoute) -> Route:
    """The route a stored row says the router serves."""
    route = stage_route(StageKey(stack, row.stage), row.port, row.host)
    if row.host is None:
        return route
    return Route(route.name, host=row.host, aliases=tuple(row.aliases or ()), tls=row.tls)  # type: ignore[arg-type]


def domain_views(stack: str, rows: list[StageRoute], router: Router) -> list[DomainView]:
    views: list[DomainView] = []
    for row in sorted(rows, key=lambda r: r.stage):
        route = route_of(stack, row)
        if not route.hosts:
            continue
        if route.tls == "off" or not router.supports_certificates:
            certificates = [Certificate(name, "none") for name in route.hosts]
        else:
            certificates = router.certificates(route)
        added = set(row.added_domains or ())
        views += [
            DomainView(
                stage=row.stage,
                name=cert.name,
                tls=route.tls,
                state=cert.state,
                description=cert.describe() if cert.state != "none" else "plain HTTP",
                issuer=cert.issuer,
                expires=cert.expires,
                error=cert.error,
                hint=cert.hint,
                added=cert.name in added,
            )
            for cert in certificates
        ]
    return views


def add_domain(session: Session, stack: Stack, stage: str, name: str) -> None:
    """Give the stage one more host name, kept across deployments; a name another stage
    serves (or this one already has) is a UsageError."""
    try:
        name = check_host(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    rows = list(session.scalars(select(StageRoute)))
    for row in rows:
        if name in row.names:
            owner = session.get(Stack, row.stack_id)
            where = f"stage {row.stage} of {owner.name if owner else '?'}"
            added = name in (row.added_domains or ())
            raise UsageError(
                f"{name} is already served by {where}",
                hint=f"remove it there first: stackyard domains remove "
                f"{owner.name if owner else '?'} --stage {row.stage} {name}"
                if added
                else "it comes from that stage's stackyard.yml (host/domains) or the base "
                "domain: remove it there and push, or pick another name",
            )
    mine = next((r for r in rows if r.stack_id == stack.id and r.stage == stage), None)
    if mine is None:  # not deployed yet: its first deployment serves the name too
        mine = StageRoute(stack_id=stack.id, stage=stage, aliases=[], tls="off")
        session.add(mine)
    mine.added_domains = [*(mine.added_domains or ()), name]


def remove_domain(session: Session, stack: Stack, stage: str, name: str) -> None:
    """Take back a name `stackyard domains add` gave the stage."""
    row = session.scalar(
        select(StageRoute).where(StageRoute.stack_id == stack.id, StageRoute.stage == stage)
    )
    if row is not None and name in (row.added_domains or ()):
        row.added_domains = [n for n in row.added_domains if n != name]
        return
    if row is not None and name in {row.host, *(row.aliases or ())}:
        raise UsageError(
            f"{name} comes from stackyard.yml (or the base domain), not from "
            "`stackyard domains add`",
            hint="remove it from the stage's host/domains in stackyard.yml and push",
        )
    raise NotFoundError(
        f"stage {stage} of {stack.name} has no host name {name}",
        hint=f"list them: stackyard domains {stack.name}",
    )
