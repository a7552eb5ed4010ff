"""A real API app on a fresh store (fake engine, router, source and registry) with people
of every role and tokens of every scope, for the access tests.

People: ``admin`` (the bootstrap token), ``alice`` (admin), ``bob`` (deployer), ``carol``
(viewer), ``dave`` (deployer). Stacks ``hello`` and ``other``. Tokens by label:
``bootstrap``, ``admin`` (alice), ``deployer`` (bob), ``viewer`` (carol), ``dave``,
``push hello`` and ``deploy hello`` (bob's), ``read hello`` (carol's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from stackyard.access.people import AuthFailed
from stackyard.access.rules import Principal
from stackyard.api.app import ApiContext, create_app
from stackyard.engines.fake import FakeEngine
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.stacks.service import StackChanges
from stackyard.store.database import migrate, open_database, session_factory
from tests import gate_runs

BOOTSTRAP = "legacy-admin-token-from-an-older-stackyard"
PEOPLE = {"alice": "admin", "bob": "deployer", "carol": "viewer", "dave": "deployer"}
ROLE_TOKENS = {"admin": "alice", "deployer": "bob", "viewer": "carol", "dave": "dave"}


@dataclass
class AccessYard:
    client: TestClient
    services: Services
    settings: Settings
    sessions: sessionmaker[Session]
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, label: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[label]}"}

    def principal(self, label: str) -> Principal:
        found = self.services.people.authenticate(self.tokens[label])
        assert not isinstance(found, AuthFailed), found
        return found

    def as_client(self, address: str) -> TestClient:
        """Another client of the same app, from another address."""
        return TestClient(self.client.app, client=(address, 50000))


@contextmanager
def access_yard(directory: Path, **settings_fields: Any) -> Iterator[AccessYard]:
    fields = {"auth_failures": 10_000, "source": "fake", "registry": "fake", **settings_fields}
    settings = Settings(data_dir=directory, **fields)
    database = open_database(settings.database_url)
    migrate(database)
    sessions = session_factory(database)
    services = build_services(
        settings,
        sessions,
        RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password"),
        engine=FakeEngine(),
        router=FakeRouter(),
    )
    app = create_app(ApiContext(settings, BOOTSTRAP, {}, services))
    for name in ("hello", "other"):
        services.stacks.create(name, StackChanges(repo=f"https://example.invalid/{name}.git"))
    yard = AccessYard(TestClient(app), services, settings, sessions, {"bootstrap": BOOTSTRAP})
    people = services.people
    for name, role in PEOPLE.items():
        yard.tokens[name] = people.add(name, role, by="admin").token
    for label, name in ROLE_TOKENS.items():
        yard.tokens[label] = yard.tokens[name]
    bob, carol = yard.principal("deployer"), yard.principal("viewer")
    for scope in ("push", "deploy"):
        issued = people.create_token(bob, scope=scope, stack="hello", label=f"{scope} hello")
        yard.tokens[f"{scope} hello"] = issued.token
    yard.tokens["read hello"] = people.create_token(carol, scope="read", stack="hello").token
    try:
        yield yard
    finally:
        services.close()
        database.dispose()


def walk(routes: list[Any], prefix: str = "") -> list[tuple[str, str, Any]]:
    """(method, path, endpoint) of every route of an app, through FastAPI's included
    routers."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.extend((method, prefix + route.path, route.endpoint) for method in route.methods)
        elif hasattr(route, "original_router"):
            found.extend(walk(route.original_router.routes, prefix + route.include_context.prefix))
    return found


def run_at_gate(yard: AccessYard, *, prod_gate: str = "approval", pushed_by: str = "bob") -> int:
    """Run 1 of ``hello`` at prod's gate (``tests/gate_runs.py``), pushed by ``pushed_by``."""
    return gate_runs.run_at_gate(
        yard.sessions, yard.settings.logs_dir, "hello", prod_gate=prod_gate, pushed_by=pushed_by
    )
