"""Every role and every token scope against every route of the app, generated from the
app's own route table: a route refuses (403, naming the permission) what the caller may
not do, and lets through what it may. A new route without a permission fails here.

What each caller may do is written out below, on its own, from the rules of docs/people.md
(roles, scopes), not taken from ``access.rules``: the test checks the enforcement against
the documented rules, for the permission each route declares in ``api/permissions.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackyard.access.rules import Action, Need
from stackyard.api.permissions import NEEDS, PUBLIC
from tests.access_yard import AccessYard, access_yard, walk

ROLE_MAY = {
    "viewer": {"read"},
    "deployer": {"read", "push", "deploy"},
    "admin": {"read", "push", "deploy", "admin"},
}
SCOPE_MAY = {"read": {"read"}, "push": {"push"}, "deploy": {"read", "push", "deploy"}}
CALLERS = {
    # label: (role of the owner, scope, stack of the token)
    "viewer": ("viewer", None, None),
    "deployer": ("deployer", None, None),
    "admin": ("admin", None, None),
    "push hello": ("deployer", "push", "hello"),
    "deploy hello": ("deployer", "deploy", "hello"),
    "read hello": ("viewer", "read", "hello"),
}
FILL = {
    "{stage}": "dev",
    "{number}": "1",
    "{user}": "nobody-here",
    "{token_id}": "0000000000",
    "{key}": "K",
    "{path:path}": "info/refs",
}


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessYard]:
    with access_yard(tmp_path_factory.mktemp("matrix")) as found:
        yield found


def routes(yard: AccessYard) -> list[tuple[str, str, Any]]:
    return walk(yard.client.app.routes)  # type: ignore[attr-defined]


def test_every_route_declares_its_permission(yard: AccessYard) -> None:
    found = routes(yard)
    endpoints = {endpoint for _, _, endpoint in found}
    missing = sorted(
        f"{method} {path}"
        for method, path, endpoint in found
        if endpoint not in NEEDS and endpoint not in PUBLIC
    )
    assert missing == [], "routes without a permission in api/permissions.py"
    stale = [getattr(e, "__qualname__", e) for e in [*NEEDS, *PUBLIC] if e not in endpoints]
    assert stale == [], "permissions of routes the app does not have"


def test_the_critical_routes_take_what_docs_people_md_says(yard: AccessYard) -> None:
    declared = {
        f"{method} {path}": NEEDS[endpoint].action
        for method, path, endpoint in routes(yard)
        if endpoint in NEEDS
    }
    expected = {
        "POST /api/v1/users": "admin",
        "DELETE /api/v1/users/{user}": "admin",
        "PATCH /api/v1/users/{user}": "admin",
        "POST /api/v1/stacks": "admin",
        "DELETE /api/v1/stacks/{name}": "admin",
        "DELETE /api/v1/stacks/{name}/stages/{stage}": "admin",
        "PUT /api/v1/stacks/{name}/stages/{stage}/protection": "admin",
        "DELETE /api/v1/stacks/{name}/stages/{stage}/protection": "admin",
        "GET /api/v1/stacks/{name}/webhook": "admin",
        "POST /api/v1/stacks/{name}/stages/{stage}/deployments": "deploy",
        "POST /api/v1/stacks/{name}/stages/{stage}/rollback": "deploy",
        "POST /api/v1/stacks/{name}/stages/{stage}/approve": "deploy",
        "PUT /api/v1/stacks/{name}/secrets/{key}": "deploy",
        "POST /api/v1/stacks/{name}/pushes": "push",
        "POST /ui/stacks/{name}/approve": "deploy",
        "POST /ui/stacks/{name}/secrets": "deploy",
        "GET /api/v1/stacks/{name}/notify": "read",
        "POST /api/v1/stacks/{name}/notify": "deploy",
        "DELETE /api/v1/stacks/{name}/notify/{number}": "deploy",
    }
    assert {route: declared[route] for route in expected} == expected


def may(label: str, need: Need, stack: str) -> bool:
    """What docs/people.md says ``label`` may do on a route that needs ``need``."""
    role, scope, own_stack = CALLERS[label]
    if need.people_only and scope is not None:
        return False
    if need.action is None:
        return True
    if scope is None:
        return need.action in ROLE_MAY[role]
    if need.stack is None or stack != own_stack:
        return False
    return need.action in SCOPE_MAY[scope] & ROLE_MAY[role]


def api_routes(yard: AccessYard) -> list[tuple[str, str, Need]]:
    return [
        (method, path, NEEDS[endpoint])
        for method, path, endpoint in routes(yard)
        if path.startswith("/api/v1/") and endpoint in NEEDS
    ]


@pytest.mark.parametrize("label", list(CALLERS))
def test_the_matrix(yard: AccessYard, label: str) -> None:
    """Each caller against every /api/v1 route, on its own stack and on another. Allowed
    calls go to a stack that does not exist (role tokens) or carry a body that does not
    validate, so they change nothing: passing authorization is all they show."""
    checked = 0
    for method, template, need in api_routes(yard):
        stacks = ["hello", "other"] if CALLERS[label][2] else ["ghost"]
        for stack in stacks:
            path = template.replace("{name}", stack)
            for key, value in FILL.items():
                path = path.replace(key, value)
            body = None if method in ("GET", "DELETE") else [1]
            response = yard.client.request(method, path, headers=yard.auth(label), json=body)
            where = (label, method, path, response.status_code, response.text[:300])
            if may(label, need, stack):
                assert response.status_code not in (401, 403, 429), where
            else:
                assert response.status_code == 403, where
                answer = response.json()
                assert answer["permission"], where
                assert answer["error"].startswith("forbidden: this takes "), where
                assert answer["hint"].startswith(("ask ", "this token may only ")), where
                if need.action is not None:
                    assert need.action in answer["permission"], where
            checked += 1
    assert checked >= 57  # every /api/v1 route, once per stack


def test_the_console_pages_by_role(yard: AccessYard, tmp_path: Path) -> None:
    """Every console page is a read: open to every person who logs in, but the targets page
    (targets are the platform's machines: admin only, as their API); a stack token cannot
    log in at all."""
    pages = [
        (path, NEEDS[endpoint])
        for method, path, endpoint in routes(yard)
        if method == "GET" and path.startswith("/ui") and endpoint in NEEDS
    ]
    assert ("/ui/targets", Need(Action.ADMIN, stack=None)) in pages
    for label in ("viewer", "deployer", "admin"):
        client = yard.as_client(f"10.0.0.{len(label)}")
        assert client.post("/ui/login", data={"token": yard.tokens[label]}).status_code == 200
        for template, need in pages:
            path = template.replace("{name}", "hello").replace("{stage}", "dev")
            query = "?kind=run&number=1" if path.endswith("/logs") and "stages" not in path else ""
            response = client.get(path + query, follow_redirects=False)
            if need.action == Action.ADMIN and label != "admin":
                assert response.status_code == 403, (label, path, response.status_code)
                continue
            assert response.status_code in (200, 303, 404), (label, path, response.status_code)
    refused = yard.client.post(
        "/ui/login", data={"token": yard.tokens["deploy hello"]}, follow_redirects=False
    )
    assert refused.status_code == 403
    assert "scoped to deploy on hello" in refused.text
