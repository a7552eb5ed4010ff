"""The web console through TestClient: sessions, CSRF, what each page renders, and that a
secret's value never comes back. The store is seeded with bench/console_render.py's seed."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bench.console_render import TOKEN, ConsoleYard, console_yard, digest_of, login
from fastapi.testclient import TestClient
from sqlalchemy import select

from stackyard.access.limits import LIMIT, WINDOW, FailureLimiter
from stackyard.api.sessions import COOKIE, ConsoleSessions, safe_next
from stackyard.api.web.render import ENVIRONMENT, short_digest
from stackyard.deploy.service import CheckView
from stackyard.engines.base import LABEL_PLATFORM, NODE_LABEL_DRAINING, Availability
from stackyard.engines.fake import FakeSwarm
from stackyard.statuses import ReleaseOrigin
from stackyard.store.models import PipelineRun, PipelineStep, Release, Stack, StageRoute

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleYard]:
    """One seeded app for the tests that only read; each test gets its own cookie jar."""
    with console_yard(tmp_path_factory.mktemp("console"), stacks=3) as found:
        yield found


@pytest.fixture
def yard(shared: ConsoleYard) -> ConsoleYard:
    return ConsoleYard(
        TestClient(shared.client.app), shared.services, shared.engine, shared.sessions
    )


@pytest.fixture
def client(yard: ConsoleYard) -> TestClient:
    login(yard.client)
    return yard.client


@pytest.fixture
def own(tmp_path: Path) -> Iterator[TestClient]:
    """A logged-in client on an app of its own, for the tests that change something."""
    with console_yard(tmp_path, stacks=1) as found:
        login(found.client)
        yield found.client


def csrf_of(client: TestClient, path: str = "/ui/") -> str:
    match = CSRF.search(client.get(path).text)
    assert match, "the page has no CSRF field"
    return match.group(1)


# -- sessions


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/ui",
        "/ui/",
        "/ui/stacks/app-00",
        "/ui/stacks/app-00/variables",
        "/ui/stacks/app-00/check",
        "/ui/stacks/app-00/domains",
        "/ui/stacks/app-00/logs?kind=run&number=1",
    ],
)
def test_pages_redirect_to_login_without_a_session(yard: ConsoleYard, path: str) -> None:
    response = yard.client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")


def test_fragments_and_forms_refuse_without_a_session(yard: ConsoleYard) -> None:
    for path in ("/ui/fragments/stacks", "/ui/fragments/stacks/app-00"):
        assert yard.client.get(path).status_code == 401
    posted = yard.client.post(
        "/ui/stacks/app-00/approve", data={"stage": "prod"}, follow_redirects=False
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == "/ui/login"


def test_login_sets_a_strict_http_only_cookie_without_the_token(yard: ConsoleYard) -> None:
    wrong = yard.client.post("/ui/login", data={"token": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401
    assert "That token does not open the console (token unknown)" in wrong.text
    assert COOKIE not in wrong.cookies
    response = yard.client.post(
        "/ui/login",
        data={"token": TOKEN, "next": "/ui/stacks/app-01"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/stacks/app-01"
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header
    assert "SameSite=strict" in header or "SameSite=Strict" in header
    assert "Secure" not in header  # served over http here
    assert "Path=/" in header
    assert TOKEN not in header
    assert yard.client.get("/ui/fragments/stacks").status_code == 200


def test_wrong_tokens_in_a_row_slow_the_login_down(own: TestClient) -> None:
    for _ in range(LIMIT):
        assert own.post("/ui/login", data={"token": "guess"}).status_code == 401
    refused = own.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert refused.status_code == 429  # even the right token waits out the window
    assert "Too many wrong tokens" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= WINDOW
    assert COOKIE not in refused.cookies


def test_login_throttle_window() -> None:
    limiter = FailureLimiter()
    for second in range(LIMIT):
        assert limiter.wait("1.2.3.4", now=float(second)) == 0
        limiter.failed("1.2.3.4", now=float(second))
    assert limiter.wait("1.2.3.4", now=5.0) == pytest.approx(WINDOW - 5.0)
    assert limiter.wait("5.6.7.8", now=5.0) == 0  # another client is not slowed
    assert limiter.wait("1.2.3.4", "5.6.7.8", now=5.0) == pytest.approx(WINDOW - 5.0)
    assert limiter.wait("1.2.3.4", now=WINDOW + 0.5) == 0  # the oldest expired


def test_login_goes_only_to_console_pages() -> None:
    assert safe_next("/ui/stacks/a") == "/ui/stacks/a"
    for target in ("//evil.example/ui/", "https://evil.example/", "/api/v1/status", None, ""):
        assert safe_next(target) == "/ui/"


def test_forged_expired_and_revoked_sessions_are_refused() -> None:
    sessions = ConsoleSessions()
    cookie = sessions.issue("abcdef0123")
    session = sessions.verify(cookie)
    assert session is not None
    assert session.token_id == "abcdef0123"
    assert sessions.verify(cookie[:-1] + ("0" if cookie[-1] != "0" else "1")) is None
    assert ConsoleSessions().verify(cookie) is None  # a restart makes a new key
    assert sessions.verify("v2.9999999999.nonce.abcdef0123.mac") is None
    forged = cookie.replace("abcdef0123", "bootstrap")  # another token id: the MAC breaks
    assert sessions.verify(forged) is None
    sessions.revoke(session)
    assert sessions.verify(cookie) is None
    short = ConsoleSessions(lifetime=-1)
    assert short.verify(short.issue("abcdef0123")) is None
    assert time.time() < session.expires


def test_logout_ends_the_session(own: TestClient) -> None:
    client = own
    cookie = client.cookies[COOKIE]
    response = client.post(
        "/ui/logout", data={"csrf_token": csrf_of(client)}, follow_redirects=False
    )
    assert response.status_code == 303
    client.cookies.set(COOKIE, cookie)  # an old copy of the cookie is no good either
    assert client.get("/ui/fragments/stacks").status_code == 401


# -- CSRF


def test_forms_without_the_csrf_token_are_refused(own: TestClient) -> None:
    client = own
    for data in ({"stage": "prod"}, {"stage": "prod", "csrf_token": "0" * 64}):
        response = client.post("/ui/stacks/app-00/approve", data=data)
        assert response.status_code == 403
        assert "CSRF token is missing or wrong" in response.text
        assert "text/html" in response.headers["content-type"]
    other = ConsoleSessions()
    stolen = other.verify(other.issue("bootstrap"))
    assert stolen is not None
    refused = client.post(
        "/ui/stacks/app-00/approve", data={"stage": "prod", "csrf_token": stolen.csrf_token}
    )
    assert refused.status_code == 403
    runs = client.get("/api/v1/stacks/app-00/runs").json()["runs"]
    assert runs[0]["status"] == "WAITING"  # nothing was approved


def test_approve_with_the_csrf_token(own: TestClient) -> None:
    client = own
    response = client.post(
        "/ui/stacks/app-00/approve", data={"stage": "prod", "csrf_token": csrf_of(client)}
    )
    assert response.status_code == 200
    assert "Approved prod for run 3." in response.text
    assert 'data-canonical="/ui/stacks/app-00"' in response.text
    typo = client.post(
        "/ui/stacks/app-00/approve", data={"stage": "prdo", "csrf_token": csrf_of(client)}
    )
    assert "stack app-00 has no stage &#39;prdo&#39; (stages: dev, staging, prod)" in typo.text


def test_an_error_of_a_service_is_a_page(client: TestClient) -> None:
    token = csrf_of(client)
    response = client.post("/ui/stacks/app-00/approve", data={"stage": "dev", "csrf_token": token})
    assert response.status_code == 400
    assert "dev of app-00 is not waiting for an approval" in response.text
    missing = client.get("/ui/stacks/nope")
    assert missing.status_code == 404
    assert "no stack named" in missing.text


# -- the API takes the cookie for reading only


def test_the_api_accepts_the_cookie_for_get_only(client: TestClient) -> None:
    assert client.get("/api/v1/stacks").status_code == 200
    assert client.get("/api/v1/stacks/app-00/logs?kind=run&number=1").status_code == 200
    assert client.post("/api/v1/stacks/app-00/runs", json={}).status_code == 401
    assert client.post("/api/v1/stacks/app-00/stages/prod/approve").status_code == 401
    client.cookies.clear()
    client.cookies.set(COOKIE, "v2.1.forged.bootstrap.mac")
    assert client.get("/api/v1/stacks").status_code == 401


# -- what the pages show


def test_the_stacks_page_shows_every_stage_in_one_engine_call(yard: ConsoleYard) -> None:
    login(yard.client)
    before = len(yard.engine.calls_to("list"))
    response = yard.client.get("/ui/")
    assert len(yard.engine.calls_to("list")) - before == 1
    html = response.text
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-frame-options"] == "DENY"
    for index in range(3):
        assert f'data-stack="app-{index:02d}"' in html
    cells = re.findall(r'<div class="cell" data-stage="(\w+)">', html)
    assert cells == ["dev", "staging", "prod"] * 3
    section = html[html.index('data-stack="app-00"') : html.index('data-stack="app-01"')]
    shas = [hashlib.sha1(f"app-00-{n}".encode()).hexdigest() for n in (1, 2)]  # noqa: S324
    assert short_digest(digest_of(shas[1])) in section  # dev and staging run build 2
    assert short_digest(digest_of(shas[0])) in section  # prod is one release behind
    assert shas[1][:8] in section
    assert "1/1 healthy" in section
    assert "2/2 healthy" in section
    assert "#2" in section
    assert "COMPLETED" in section


def test_the_api_lists_a_stacks_stages_as_the_grid_shows_them(tmp_path: Path) -> None:
    """`stackyard stacks show` and `stages list` read this: before, nothing in the CLI
    showed what each stage of a stack runs and where it answers."""
    with console_yard(tmp_path, stacks=1) as yard:
        with yard.sessions.begin() as session:
            stack_id = session.scalar(select(Stack.id).where(Stack.name == "app-00"))
            session.add(StageRoute(stack_id=stack_id, stage="dev", port=18080))
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        before = len(yard.engine.calls_to("list"))
        found = yard.client.get("/api/v1/stacks/app-00/stages", headers=bearer).json()
        assert len(yard.engine.calls_to("list")) - before == 1
        unknown = yard.client.get("/api/v1/stacks/nope/stages", headers=bearer)
        anonymous = yard.client.get("/api/v1/stacks/app-00/stages")
    shas = [hashlib.sha1(f"app-00-{n}".encode()).hexdigest() for n in (1, 2)]  # noqa: S324
    stages = {s["stage"]: s for s in found["stages"]}
    assert [s["stage"] for s in found["stages"]] == ["dev", "staging", "prod"]
    assert stages["dev"]["digest"] == digest_of(shas[1])
    assert stages["prod"]["digest"] == digest_of(shas[0])  # one release behind
    assert {s["target"] for s in stages.values()} == {"local"}
    assert (stages["prod"]["healthy"], stages["prod"]["desired"]) == (2, 2)
    assert stages["dev"]["deployment_status"] == "COMPLETED"
    assert stages["dev"]["url"] == "http://127.0.0.1:18080"
    assert stages["staging"]["url"] is None  # no route (yet)
    assert found["engine_error"] is None
    assert unknown.status_code == 404
    assert "no stack named 'nope'" in unknown.text
    assert anonymous.status_code == 401


def test_every_form_carries_the_session_csrf_token(client: TestClient) -> None:
    token = csrf_of(client)
    for path in (
        "/ui/",
        "/ui/stacks/app-00",
        "/ui/fragments/stacks/app-00",
        "/ui/stacks/app-00/variables",
        "/ui/targets",  # its forms once had an empty token (macros imported without context)
    ):
        html = client.get(path).text
        values = re.findall(r'name="csrf_token" value="([^"]*)"', html)
        assert values, path
        assert set(values) == {token}, path
        assert html.count('method="post"') == len(values), path


def test_the_stack_page_offers_approve_promote_and_rollback(client: TestClient) -> None:
    html = client.get("/ui/stacks/app-00").text
    assert "Approve prod" in html
    assert html.count("Promote to ") == 3
    assert 'data-confirm="Approve the gate of prod and deploy it?"' in html
    assert "Roll back" in html
    assert 'data-live="/ui/fragments/stacks/app-00"' in html
    assert re.search(r"gate prod\s*<small>waiting</small>", html)
    fragment = client.get("/ui/fragments/stacks/app-00")
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "Approve prod" in fragment.text


def test_the_log_pages_follow_the_sse_endpoints(client: TestClient) -> None:
    html = client.get("/ui/stacks/app-00/logs?kind=deployment&stage=dev&number=1").text
    assert (
        'data-stream="/api/v1/stacks/app-00/logs?kind=deployment&amp;number=1&amp;follow=true'
        '&amp;stage=dev"' in html
    )
    tasks = client.get("/ui/stacks/app-00/stages/dev/logs").text
    assert 'data-stream="/api/v1/stacks/app-00/stages/dev/tasks/logs?follow=true' in tasks
    assert client.get("/ui/stacks/app-00/logs?kind=release&number=1").status_code == 400


def test_the_check_page_compares_task_digests(yard: ConsoleYard) -> None:
    login(yard.client)
    html = yard.client.get("/ui/stacks/app-00/check").text
    assert html.count("match</td>") == 4
    assert "no_match" not in html
    assert html.count("converged</span>") == 3


def test_the_check_page_says_what_a_moving_task_waits_for_escaped() -> None:
    waiting = "sy-app-dev-r1-ab moving: waits for a node: no suitable node <b>(x)</b>"
    view = CheckView(stack="app", stage="dev", release=1, digest="sha256:" + "a" * 64,
                     tasks=[], desired=1, converged=False, deployment=None,
                     waiting=[waiting])  # fmt: skip
    html = ENVIRONMENT.get_template("check.html").render(
        stack_name="app", checks=[("dev", view, None)], csrf_token="t"
    )
    assert 'task <span class="mono">sy-app-dev-r1-ab moving: waits for a node: no suitable' in html
    assert "&lt;b&gt;(x)&lt;/b&gt;" in html


def test_the_nodes_page_and_the_api_show_every_task_on_each_node_and_the_platforms_share(
    tmp_path: Path,
) -> None:
    swarm = FakeSwarm()
    with console_yard(tmp_path, stacks=1, engine=swarm) as yard:
        login(yard.client)
        swarm.occupy("node-1", tasks=2)  # another platform's services, say
        platform = yard.services.controller.settings.platform_id
        ours = swarm.list({LABEL_PLATFORM: platform})
        assert ours  # the seed's tasks
        mine = {n: sum(t.node == n and t.running for t in ours) for n in swarm.node_use()}
        listed = {n["id"]: n for n in yard.client.get("/api/v1/nodes").json()["nodes"]}
        assert set(listed) == {"node-1", "node-2", "node-3"}
        for node_id, node in listed.items():
            assert node["tasks"] == mine.get(node_id, 0)
            foreign = 2 if node_id == "node-1" else 0
            assert node["all_tasks"] == node["tasks"] + foreign, node
        html = yard.client.get("/ui/nodes").text
        assert '<a href="/ui/nodes" aria-current="page">Nodes</a>' in html
        rows = {row.split('"', 2)[1]: row for row in html.split("<tr data-node=")[1:]}
        for node_id, node in listed.items():
            cell = f'<td class="tasks">{node["all_tasks"]} ({node["tasks"]} ours)</td>'
            assert cell in rows[node_id], rows
        assert 'href="/ui/nodes"' in yard.client.get("/ui/").text


def test_a_platform_finishes_its_own_drains_not_another_platforms_on_the_same_swarm(
    tmp_path: Path,
) -> None:
    """Two platforms on one swarm: the other one drains node-4 and waits for its own tasks
    there. This one has none there, and once finished that drain for it (Swarm then
    stopped the other platform's tasks at once)."""
    swarm = FakeSwarm()
    with console_yard(tmp_path, stacks=1, engine=swarm) as yard:
        platform = yard.services.controller.settings.platform_id
        swarm.add_node("node-4", "127.0.0.5")  # none of this platform's tasks: the other's
        swarm.add_node("node-5", "127.0.0.6")  # nothing at all: this platform drains it
        swarm.occupy("node-4", tasks=2)
        swarm.update_node(
            "node-4", availability=Availability.PAUSE, labels={NODE_LABEL_DRAINING: "other"}
        )
        assert not any(t.node == "node-4" for t in swarm.list({LABEL_PLATFORM: platform}))
        yard.services.controller.finish_drains()
        login(yard.client)
        drained = yard.client.post(
            "/api/v1/nodes/node-5/drain",
            json={"force": False},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert drained.status_code == 200, drained.text
        deadline = time.monotonic() + 10
        listed: dict[str, Any] = {}
        while time.monotonic() < deadline:
            listed = {n["id"]: n for n in yard.client.get("/api/v1/nodes").json()["nodes"]}
            if listed["node-5"]["availability"] == "drain":
                break
            time.sleep(0.05)
        # Its own drain (no task of its own to move) is done, the other's is left as it was.
        assert (listed["node-5"]["availability"], listed["node-5"]["draining"]) == ("drain", False)
        assert (listed["node-4"]["availability"], listed["node-4"]["draining"]) == ("pause", True)


def test_targets_are_added_checked_and_removed_in_the_console(
    own: TestClient, tmp_path: Path
) -> None:
    """Issue 13: targets are managed through the CLI, the API and the console."""
    home = own.get("/ui/").text
    assert 'href="/ui/targets"' in home  # the admin's header links the page
    listed = own.get("/ui/targets").text
    assert 'data-target="local"' in listed
    token = csrf_of(own, "/ui/targets")
    nothing = tmp_path / "no-engine.sock"  # nothing listens: added, and the check says so
    added = own.post(
        "/ui/targets",
        data={"name": "eu", "engine": "docker", "endpoint": f"unix://{nothing}",
              "registry": "local", "region": "eu-west", "csrf_token": token},
    )  # fmt: skip
    assert added.status_code == 200, added.text
    assert f"Added target eu: docker unix://{nothing}." in added.text
    assert 'data-checked="eu"' in added.text
    assert "cannot be used" in added.text
    assert 'data-target="eu"' in added.text
    checked = own.post("/ui/targets/local/check", data={"csrf_token": token})
    assert 'data-checked="local"' in checked.text
    assert "<p>engine: ok</p>" in checked.text  # this yard has no registry: said so below
    bad = own.post(
        "/ui/targets",
        data={"name": "Bad Name", "engine": "docker", "endpoint": "unix:///x",
              "csrf_token": token},
    )  # fmt: skip
    assert bad.status_code == 400
    assert "target name" in bad.text
    unknown_engine = own.post(
        "/ui/targets",
        data={"name": "us", "engine": "podman", "endpoint": "unix:///x", "csrf_token": token},
    )
    assert "engine &#39;podman&#39; is not one of docker, swarm" in unknown_engine.text
    removed = own.post("/ui/targets/eu/remove", data={"csrf_token": token})
    assert "Removed target eu." in removed.text
    assert 'data-target="eu"' not in removed.text
    forged = own.post("/ui/targets/local/remove", data={"name": "local"})  # no CSRF token
    assert forged.status_code == 403


def test_the_nodes_page_of_a_target_that_is_not_a_swarm_says_so(
    own: TestClient, tmp_path: Path
) -> None:
    unknown = own.get("/ui/nodes?target=nope")
    assert unknown.status_code == 404
    assert "no target named &#39;nope&#39;" in unknown.text
    token = csrf_of(own, "/ui/targets")
    own.post(
        "/ui/targets",
        data={"name": "single", "engine": "docker", "endpoint": f"unix://{tmp_path}/d.sock",
              "csrf_token": token},
    )  # fmt: skip
    single = own.get("/ui/nodes?target=single")
    assert single.status_code == 400
    assert "cannot list or change nodes" in single.text
    assert "stackyard targets" in single.text


def test_the_console_links_no_nodes_page_on_an_engine_without_nodes(client: TestClient) -> None:
    assert 'href="/ui/nodes"' not in client.get("/ui/").text
    page = client.get("/ui/nodes")
    assert page.status_code == 200
    assert "nodes exist on a cluster engine" in page.text


# -- variables and secrets


def test_a_secret_value_is_never_rendered(own: TestClient) -> None:
    client = own
    value = "s3cr3t-VALUE-never-shown"
    response = client.post(
        "/ui/stacks/app-00/secrets",
        data={
            "scope": "stage:dev",
            "action": "set",
            "name": "API_KEY",
            "value": value,
            "csrf_token": csrf_of(client, "/ui/stacks/app-00/variables"),
        },
    )
    assert response.status_code == 200, response.text
    assert "Changed secret API_KEY (stage dev)." in response.text
    assert value not in response.text
    page = client.get("/ui/stacks/app-00/variables").text
    assert value not in page
    assert "API_KEY" in page
    assert "version 1" in page
    for path in ("/ui/", "/ui/stacks/app-00", "/ui/fragments/stacks/app-00"):
        assert value not in client.get(path).text


def test_set_and_unset_a_variable(own: TestClient) -> None:
    client = own
    token = csrf_of(client, "/ui/stacks/app-00/variables")
    base = {"scope": "stack", "name": "GREETING", "csrf_token": token}
    response = client.post(
        "/ui/stacks/app-00/variables", data={**base, "action": "set", "value": "hello"}
    )
    assert response.status_code == 200, response.text
    assert "Changed runtime variable GREETING (every stage)." in response.text
    assert "hello" in client.get("/ui/stacks/app-00/variables").text
    unset = client.post("/ui/stacks/app-00/variables", data={**base, "action": "unset"})
    assert "Changed runtime variable GREETING" in unset.text
    bad = client.post("/ui/stacks/app-00/variables", data={**base, "action": "set", "name": "1BAD"})
    assert bad.status_code == 400
    assert 'class="error"' in bad.text


def test_the_stack_page_shows_where_each_release_came_from(tmp_path: Path) -> None:
    with console_yard(tmp_path, stacks=1) as found:
        with found.sessions.begin() as session:
            stack_id = session.scalar(select(Stack.id).where(Stack.name == "app-00"))
            session.add(
                Release(
                    stack_id=stack_id,
                    stage="prod",
                    number=2,
                    digest=digest_of("chosen"),
                    source="chosen commit 4fe8827 (forced)",
                    origin=ReleaseOrigin.CHOSEN,
                    forced=True,
                    created_by="ann",
                )
            )
        login(found.client)
        html = found.client.get("/ui/stacks/app-00").text
    # how it was made (the CLI's VIA) is the origin's title: the column stays narrow
    assert (
        '<td class="origin" title="chosen commit 4fe8827 (forced)">chosen, forced by ann</td>'
    ) in html
    assert '">promotion</td>' in html  # the seeded releases
    # Release 2 was never deployed: prod still runs release 1, and its cell says so.
    assert '#1 <span class="waiting" title="stackyard deploy app-00 --stage prod">' in html
    assert "(#2 not deployed)" in html


def test_the_steps_after_a_failed_one_read_as_not_run_not_as_failed(tmp_path: Path) -> None:
    with console_yard(tmp_path, stacks=1) as found:
        with found.sessions.begin() as session:
            stack_id = session.scalar(select(Stack.id).where(Stack.name == "app-00"))
            run = PipelineRun(
                stack_id=stack_id, number=9, ref="main", commit_sha="c" * 40,
                trigger="git push", status="FAILED", error="deployment 9 of dev FAILED",
            )  # fmt: skip
            session.add(run)
            session.flush()
            for position, (kind, stage, status) in enumerate(
                [("deploy", "dev", "FAILED"), ("release", "staging", "CANCELLED")]
            ):
                session.add(
                    PipelineStep(
                        run_id=run.id, position=position, kind=kind, stage=stage,
                        status=status,
                        started_at=None if status == "CANCELLED" else datetime.now(UTC),
                    )
                )  # fmt: skip
        login(found.client)
        html = found.client.get("/ui/stacks/app-00").text
    row = html[html.index('data-run="9"') :]
    row = row[: row.index("</tr>")]
    assert 'class="step bad" title="FAILED' in row
    assert 'class="step dim" title="NOT RUN' in row
    assert "<small>not run</small>" in row
    assert "cancelled" not in row


def test_the_stacks_page_shows_disk_use_and_the_last_retention(tmp_path: Path) -> None:
    with console_yard(tmp_path, stacks=1) as found:
        login(found.client)
        before = found.client.get("/ui/").text
        assert "Retention has not run yet" in before
        report = {
            "keep_releases": 10,
            "finished_at": "2026-11-27T09:00:00+00:00",
            "before": {"registry": 5_000_000, "logs": 2_000},
            "after": {"registry": 1_000_000, "logs": 1_000},
            "manifests": ["app-00@sha256:aa", "app-00@sha256:bb"],
            "errors": [],
        }
        (tmp_path / "retention.json").write_text(json.dumps(report))
        page = found.client.get("/ui/").text
    assert "<h2>Disk</h2>" in page
    assert "<td>registry</td><td>5.0MB</td><td>1.0MB</td><td>4.0MB</td>" in page
    assert "2 image(s) removed from the registry, 4.0MB freed" in page
    assert "keeps the last 10 releases per stage" in page


def test_the_domains_page_has_a_certificate_column_and_each_stages_traffic(
    client: TestClient,
) -> None:
    answer = client.get("/ui/stacks/app-00/domains")
    assert answer.status_code == 200, answer.text
    assert "<th>certificate</th><th>expires</th>" in answer.text
    assert "no stage of app-00 is served on a host name" in answer.text
    assert "no stage of app-00 is served yet" in answer.text  # no route: no traffic
    assert client.get("/ui/stacks/app-00/domains?minutes=0").status_code == 422
    assert 'href="/ui/stacks/app-00/domains"' in client.get("/ui/stacks/app-00").text


def test_the_stack_grid_shows_each_https_stages_certificate(tmp_path: Path) -> None:
    """The worst state the certificate watch recorded for the stage's names, linked to
    the domains page when it is not ok; nothing for a stage without HTTPS names."""
    with console_yard(tmp_path, stacks=1) as found:
        login(found.client)
        with found.sessions.begin() as session:
            stack_id = session.scalar(select(Stack.id).where(Stack.name == "app-00"))
            session.add_all([
                StageRoute(stack_id=stack_id, stage="dev", host="dev.app.test", tls="acme",
                           aliases=["www.app.test", "old.app.test"],
                           certificate_notices={"www.app.test": "expiring",
                                                "old.app.test": "failed"}),
                StageRoute(stack_id=stack_id, stage="staging", host="staging.app.test",
                           tls="internal"),
                StageRoute(stack_id=stack_id, stage="prod", host="app.test", tls="off"),
            ])  # fmt: skip
        html = found.client.get("/ui/").text
    parts = html.split('<div class="cell" data-stage="')[1:]
    cells = {part.split('"', 1)[0]: part for part in parts}
    assert '<dd class="certificate bad" title="old.app.test">' in cells["dev"]
    assert '<a href="/ui/stacks/app-00/domains">failed: old.app.test</a>' in cells["dev"]
    assert '<dd class="certificate ok" title="staging.app.test">ok</dd>' in cells["staging"]
    assert "certificate" not in cells["prod"]


def test_a_stage_scaled_to_zero_reads_as_no_tasks_not_as_unhealthy() -> None:
    """`replicas: 0` is a choice: its cell said "0/0 healthy" in red, as a failing stage."""
    from stackyard.api.web.render import ENVIRONMENT
    from stackyard.deploy.overview import StageCell

    macros = ENVIRONMENT.get_template("_macros.html").make_module({"can": lambda *_: False})
    zero = str(macros.cell("shop", StageCell("dev", release=3, digest=digest_of("x"))))
    assert "no tasks (replicas: 0)" in zero
    assert "healthy" not in zero
    down = str(macros.cell("shop", StageCell("dev", release=3, digest=digest_of("x"), desired=2)))
    assert '<dd class="health bad">0/2 healthy</dd>' in down
