"""Every API route but /healthz refuses a request without the admin token.

The git remote and webhook routes check their own credentials instead (Basic auth with
the token, a signature), and refuse without them with 401 too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from stackyard.api.app import ApiContext, create_app
from stackyard.pipeline.services import build_services
from stackyard.registry_login import RegistryLogin
from stackyard.settings import Settings
from stackyard.store.database import migrate, open_database, session_factory

TOKEN = "t0ken-for-tests"


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # Every route is tried with a wrong token: no rate limit here (tests/unit/
    # test_access_attacks.py has its own).
    settings = Settings(data_dir=tmp_path, auth_failures=10_000)
    database = open_database(settings.database_url)
    migrate(database)
    registry = RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password")
    services = build_services(settings, session_factory(database), registry)
    app = create_app(ApiContext(settings, TOKEN, {}, services))
    return TestClient(app)


def _walk(routes: list[Any], prefix: str = "") -> list[tuple[str, str]]:
    # FastAPI keeps included routers as lazy wrappers; unwrap them to reach every route.
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.extend((method, prefix + route.path) for method in route.methods)
        elif hasattr(route, "original_router"):
            found.extend(_walk(route.original_router.routes, prefix + route.include_context.prefix))
    return found


def _routes(client: TestClient) -> list[tuple[str, str]]:
    return _walk(client.app.routes)  # type: ignore[attr-defined]


def test_healthz_needs_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def _console_page(path: str) -> bool:
    """Console pages and forms send a browser to the login page instead of a bare 401."""
    return (path == "/" or path.startswith("/ui")) and not path.startswith("/ui/fragments/")


def test_every_other_route_refuses_without_token(client: TestClient) -> None:
    routes = [r for r in _routes(client) if r[1] not in ("/healthz", "/ui/login")]
    assert routes, "the app has no routes besides /healthz"
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = client.request(method, path, headers=headers, follow_redirects=False)
            if _console_page(path):
                assert response.status_code == 303, (method, path)
                assert response.headers["location"].startswith("/ui/login"), (method, path)
            else:
                assert response.status_code == 401, (method, path)
    assert client.get("/ui/login").status_code == 200  # the login form itself is public
    assert client.post("/ui/login", data={"token": "nope"}).status_code == 401


def test_trigger_routes_refuse_unauthenticated_and_unsigned_requests(client: TestClient) -> None:
    """The git remote and the webhooks skip the bearer token, but nothing is open: git needs
    the token as its Basic password and a webhook its signature, even for a real stack."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = client.post("/api/v1/stacks", json={"name": "hello", "repo": "/r"}, headers=auth)
    assert created.status_code == 201
    routes = [r for r in _routes(client) if r[1].startswith(("/git/", "/api/v1/hooks/"))]
    assert {path for _, path in routes} == {
        "/git/{stack}.git/{path:path}",
        "/api/v1/hooks/github/{stack}",
        "/api/v1/hooks/gitlab/{stack}",
    }
    for method, template in routes:
        path = template.replace("{stack}", "hello").replace("{path:path}", "info/refs")
        for headers in ({}, {"Authorization": "Basic c3RhY2t5YXJkOm5vcGU="}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
        if template.startswith("/api/v1/hooks/"):
            # The admin token is not a webhook signature.
            response = client.request(method, path, headers=auth, json={})
            assert response.status_code == 401, (method, path)


def test_docs_pages_are_not_public(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_status_with_token(client: TestClient) -> None:
    response = client.get("/api/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.json()["version"]
    schema = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert "/api/v1/status" in schema.json()["paths"]
