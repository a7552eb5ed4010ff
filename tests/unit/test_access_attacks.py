"""The attacks of issue 15, each tried against the real app: expired and revoked tokens,
a push token on the API and on another stack's remote, widening a protected stage from a
pushed stackyard.yml, a deployer off the lists, four eyes, the last admin, brute force,
forged console forms, a route without a permission. Each refusal is in the audit log."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from stackyard.access.tokens import token_id_of
from stackyard.api.routes import people as people_routes
from stackyard.api.sessions import COOKIE
from stackyard.statuses import RunStatus, StepStatus
from stackyard.store.models import NotificationChannel, Token
from tests.access_yard import AccessYard, access_yard, run_at_gate
from tests.gate_runs import BOUND, wait_for, waiting

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[AccessYard]:
    with access_yard(tmp_path) as found:
        try:
            yield found
        finally:
            found.services.runs.shutdown(timeout=BOUND)


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"x:{token}".encode()).decode()}


def audit(yard: AccessYard, **filters: str) -> list[dict[str, object]]:
    answer = yard.client.get("/api/v1/audit", params=filters, headers=yard.auth("admin"))
    entries: list[dict[str, object]] = answer.json()["entries"]
    return entries


def protect_prod(yard: AccessYard, **fields: object) -> None:
    body = {"approvers": ["alice", "dave"], "deployers": ["bob"], **fields}
    answer = yard.client.put(
        "/api/v1/stacks/hello/stages/prod/protection", json=body, headers=yard.auth("admin")
    )
    assert answer.status_code == 200, answer.text


# -- tokens that no longer work


def test_revoked_and_expired_tokens_get_401_saying_so(yard: AccessYard) -> None:
    bob_id = token_id_of(yard.tokens["deployer"])
    assert yard.client.get("/api/v1/whoami", headers=yard.auth("deployer")).status_code == 200
    yard.client.delete(f"/api/v1/tokens/{bob_id}", headers=yard.auth("admin"))
    refused = yard.client.get("/api/v1/stacks", headers=yard.auth("deployer"))
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("token revoked")
    assert refused.headers["www-authenticate"] == "Bearer"

    with yard.sessions.begin() as session:
        past = datetime.now(UTC) - timedelta(minutes=1)
        push_id = token_id_of(yard.tokens["push hello"])
        session.execute(update(Token).where(Token.id == push_id).values(expires_at=past))
    expired = yard.client.post(
        "/api/v1/stacks/hello/pushes", json={"updates": ""}, headers=yard.auth("push hello")
    )
    assert expired.status_code == 401
    assert expired.json()["detail"].startswith("token expired")
    git = yard.client.get(
        "/git/hello.git/info/refs?service=git-receive-pack",
        headers=basic(yard.tokens["push hello"]),
    )
    assert git.status_code == 401
    assert git.text.startswith("stackyard: token expired; get the remote URL with")
    entries = audit(yard, since="1h")
    refusals = [(e["status"], e["detail"]) for e in entries if e["result"] == "refused"]
    assert (401, "token expired: log in with a valid token") in refusals
    assert (401, "token revoked: log in with a valid token") in refusals


def test_a_console_session_ends_when_its_token_is_revoked(yard: AccessYard) -> None:
    client = yard.as_client("10.1.1.1")
    assert client.post("/ui/login", data={"token": yard.tokens["viewer"]}).status_code == 200
    assert client.get("/ui/", follow_redirects=False).status_code == 200
    yard.client.delete(
        f"/api/v1/tokens/{token_id_of(yard.tokens['viewer'])}", headers=yard.auth("admin")
    )
    gone = client.get("/ui/", follow_redirects=False)
    assert gone.status_code == 303
    assert gone.headers["location"].startswith("/ui/login")
    assert client.get("/api/v1/stacks").status_code == 401  # nor does the cookie read the API


# -- a push token does one thing


def test_a_push_token_pushes_to_its_stack_and_does_nothing_else(yard: AccessYard) -> None:
    push = basic(yard.tokens["push hello"])
    own = yard.client.get("/git/hello.git/info/refs?service=git-receive-pack", headers=push)
    assert own.status_code == 200, own.text
    other = yard.client.get("/git/other.git/info/refs?service=git-receive-pack", headers=push)
    assert other.status_code == 403
    assert "this takes push on stack other" in other.text
    fetch = yard.client.get("/git/hello.git/info/refs?service=git-upload-pack", headers=push)
    assert fetch.status_code == 403  # not even a clone of its own stack
    assert "this takes read on stack hello" in fetch.text
    for method, path in (
        ("GET", "/api/v1/stacks"),
        ("GET", "/api/v1/stacks/hello"),
        ("GET", "/api/v1/stacks/hello/runs"),
        ("GET", "/api/v1/stacks/hello/secrets"),
        ("POST", "/api/v1/stacks/hello/runs"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/audit"),
    ):
        answer = yard.client.request(method, path, headers=yard.auth("push hello"), json={})
        assert answer.status_code == 403, (method, path)
    report = yard.client.post(
        "/api/v1/stacks/hello/pushes", json={"updates": ""}, headers=yard.auth("push hello")
    )
    assert report.status_code == 200
    refused = [e for e in audit(yard) if e["result"] == "refused" and e["via"] == "git"]
    assert {e["target"] for e in refused} == {
        "GET /git/other.git/info/refs",
        "GET /git/hello.git/info/refs",
    }
    assert all(e["actor"] == "bob" for e in refused)


# -- protected stages


def test_a_pushed_stackyard_yml_cannot_take_the_gate_off_a_protected_stage(
    yard: AccessYard,
) -> None:
    """The build's stackyard.yml says prod promotes automatically; prod is protected on
    the platform, so the run still waits at prod's gate, for one of its approvers."""
    protect_prod(yard)
    number = run_at_gate(yard, prod_gate="auto", pushed_by="bob")
    yard.services.runs.resume_interrupted()
    run = wait_for(lambda: yard.services.runs.get("hello", number), waiting)
    gate = next(s for s in run.steps if s.stage == "prod" and s.kind == "gate")
    assert (gate.status, gate.message) == (StepStatus.WAITING, "auto")
    refused = yard.client.post(
        "/api/v1/stacks/hello/stages/prod/approve", headers=yard.auth("deployer")
    )
    assert refused.status_code == 403
    assert (
        refused.json()["permission"] == "being one of the approvers of protected stage hello/prod"
    )
    widen = yard.client.put(
        "/api/v1/stacks/hello/stages/prod/protection",
        json={"approvers": ["bob"], "deployers": ["bob"]},
        headers=yard.auth("deployer"),
    )
    assert widen.status_code == 403
    assert widen.json()["permission"] == "admin on stack hello"
    approved = yard.client.post(
        "/api/v1/stacks/hello/stages/prod/approve", headers=yard.auth("dave")
    )
    assert approved.status_code == 200, approved.text
    gate = next(s for s in approved.json()["steps"] if s["stage"] == "prod" and s["kind"] == "gate")
    assert gate["approved_by"] == "dave"
    entries = audit(yard, action="approve")
    assert [(e["actor"], e["result"]) for e in entries] == [("dave", "ok"), ("bob", "refused")]


def test_only_the_deployers_of_a_protected_stage_change_it(yard: AccessYard) -> None:
    protect_prod(yard)
    dave, bob = yard.auth("dave"), yard.auth("deployer")
    forbidden = [
        ("POST", "/api/v1/stacks/hello/stages/prod/deployments", {}),
        ("POST", "/api/v1/stacks/hello/stages/prod/rollback", {}),
        ("POST", "/api/v1/stacks/hello/stages/prod/releases", None),
        ("POST", "/api/v1/stacks/hello/stages/prod/promote", {}),
        ("PUT", "/api/v1/stacks/hello/variables/K?stage=prod", {"value": "v"}),
        ("PUT", "/api/v1/stacks/hello/variables/K", {"value": "v"}),  # every stage: prod too
        ("PUT", "/api/v1/stacks/hello/secrets/K", {"value": "v"}),
        ("PUT", "/api/v1/stacks/hello/secrets/K?build=true", {"value": "v"}),  # no such thing
        ("DELETE", "/api/v1/stacks/hello/secrets/K", None),
    ]
    for method, path, body in forbidden:
        answer = yard.client.request(method, path, headers=dave, json=body)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["permission"].endswith("deployers of protected stage hello/prod")
    allowed = [
        ("PUT", "/api/v1/stacks/hello/variables/K?stage=dev", {"value": "v"}),
        ("PUT", "/api/v1/stacks/hello/variables/K?build=true", {"value": "v"}),
    ]
    for method, path, body in allowed:
        answer = yard.client.request(method, path, headers=dave, json=body)
        assert answer.status_code == 200, (method, path, answer.text)
    answer = yard.client.put("/api/v1/stacks/hello/variables/K", headers=bob, json={"value": "v"})
    assert answer.status_code == 200, answer.text
    variables = yard.client.get("/api/v1/stacks/hello/variables", headers=bob).json()["variables"]
    assert {(v["stage"], v["kind"]) for v in variables} == {
        ("dev", "runtime"),
        (None, "build"),
        (None, "runtime"),
    }


def test_four_eyes_refuses_the_pushers_own_approval(yard: AccessYard) -> None:
    protect_prod(yard, approvers=["alice", "bob"], four_eyes=True)
    number = run_at_gate(yard, pushed_by="bob")
    yard.services.runs.resume_interrupted()
    wait_for(lambda: yard.services.runs.get("hello", number), waiting)
    own = yard.client.post(
        "/api/v1/stacks/hello/stages/prod/approve", headers=yard.auth("deployer")
    )
    assert own.status_code == 403
    assert own.json()["error"] == (
        "stage prod needs four eyes: bob pushed run 1 and may not also approve it"
    )
    other = yard.client.post("/api/v1/stacks/hello/stages/prod/approve", headers=yard.auth("admin"))
    assert other.status_code == 200, other.text
    runs = yard.client.get("/api/v1/stacks/hello/runs", headers=yard.auth("viewer")).json()["runs"]
    assert runs[0]["pushed_by"] == "bob"
    gate = next(s for s in runs[0]["steps"] if s["stage"] == "prod" and s["kind"] == "gate")
    assert gate["approved_by"] == "alice"


def test_four_eyes_with_an_unknown_pusher(yard: AccessYard) -> None:
    protect_prod(yard, approvers=["alice"], four_eyes=True)
    number = run_at_gate(yard, pushed_by="")  # started by polling
    yard.services.runs.resume_interrupted()
    wait_for(lambda: yard.services.runs.get("hello", number), waiting)
    answer = yard.client.post(
        "/api/v1/stacks/hello/stages/prod/approve", headers=yard.auth("admin")
    )
    assert answer.status_code == 403
    assert "nobody knows who pushed run 1" in answer.json()["error"]


def test_protection_names_people_and_valid_stages(yard: AccessYard) -> None:
    admin = yard.auth("admin")
    path = "/api/v1/stacks/hello/stages/prod/protection"
    typo = yard.client.put(path, json={"approvers": ["alcie"]}, headers=admin)
    assert typo.status_code == 400
    assert typo.json()["error"].startswith("no person named alcie (people: admin, alice, bob")
    bad = yard.client.put("/api/v1/stacks/hello/stages/Prod!/protection", json={}, headers=admin)
    assert bad.status_code == 400
    assert "'Prod!' is not a valid stage name" in bad.json()["error"]
    missing = yard.client.delete(path, headers=admin)
    assert missing.status_code == 404


# -- people


def test_removing_the_last_admin_is_refused(yard: AccessYard) -> None:
    admin = yard.auth("admin")
    assert yard.client.delete("/api/v1/users/admin", headers=admin).status_code == 200
    last = yard.client.delete("/api/v1/users/alice", headers=admin)
    assert last.status_code == 400
    assert last.json()["error"] == "alice is the last admin; cannot remove them"
    demote = yard.client.patch("/api/v1/users/alice", json={"role": "viewer"}, headers=admin)
    assert demote.status_code == 400
    assert yard.client.get("/api/v1/whoami", headers=admin).json()["role"] == "admin"
    # The removed bootstrap person's token went with them.
    assert yard.client.get("/api/v1/whoami", headers=yard.auth("bootstrap")).status_code == 401


# -- brute force


def test_wrong_tokens_hit_the_rate_limit_per_address(tmp_path: Path) -> None:
    with access_yard(tmp_path, auth_failures=3) as yard:
        guesser = yard.as_client("10.9.9.9")
        for _ in range(3):
            answer = guesser.get("/api/v1/stacks", headers={"Authorization": "Bearer guess"})
            assert answer.status_code == 401
        locked = guesser.get("/api/v1/stacks", headers=yard.auth("admin"))
        assert locked.status_code == 429  # even the right token waits out the window
        assert 0 < int(locked.headers["retry-after"]) <= 60
        git = guesser.get("/git/hello.git/info/refs?service=git-upload-pack", headers=basic("x"))
        assert git.status_code == 429
        login = guesser.post("/ui/login", data={"token": yard.tokens["viewer"]})
        assert login.status_code == 429
        elsewhere = yard.as_client("10.8.8.8").get("/api/v1/stacks", headers=yard.auth("admin"))
        assert elsewhere.status_code == 200  # another address is not slowed
        no_token = yard.as_client("10.7.7.7")
        for _ in range(5):  # a missing token is not a guess
            assert no_token.get("/api/v1/stacks").status_code == 401
        assert no_token.get("/api/v1/stacks", headers=yard.auth("admin")).status_code == 200
        refused = [e for e in audit(yard) if e["status"] == 429]
        assert {e["source"] for e in refused} == {"10.9.9.9"}


def test_wrong_secrets_for_one_token_id_lock_that_token(tmp_path: Path) -> None:
    with access_yard(tmp_path, auth_failures=3) as yard:
        real = yard.tokens["deployer"]
        forged = real[: real.rindex("_") + 1] + "A" * 43
        for index in range(3):  # from three addresses: the address limit is not reached
            answer = yard.as_client(f"10.0.1.{index}").get(
                "/api/v1/stacks", headers={"Authorization": f"Bearer {forged}"}
            )
            assert answer.status_code == 401
        locked = yard.as_client("10.0.2.1").get("/api/v1/stacks", headers=yard.auth("deployer"))
        assert locked.status_code == 429
        other = yard.as_client("10.0.2.1").get("/api/v1/stacks", headers=yard.auth("viewer"))
        assert other.status_code == 200


# -- the console


def _login(yard: AccessYard, label: str, address: str) -> tuple[TestClient, str]:
    client = yard.as_client(address)
    assert client.post("/ui/login", data={"token": yard.tokens[label]}).status_code == 200
    match = CSRF.search(client.get("/ui/stacks/hello").text)
    assert match is not None
    return client, match.group(1)


def test_a_viewer_is_offered_no_action_and_a_forged_one_is_refused(yard: AccessYard) -> None:
    number = run_at_gate(yard)
    yard.services.runs.resume_interrupted()
    wait_for(lambda: yard.services.runs.get("hello", number), waiting)
    client, csrf = _login(yard, "viewer", "10.2.0.1")
    page = client.get("/ui/stacks/hello").text
    assert "carol (viewer)" in page
    assert 'href="/ui/targets"' not in page  # admin only
    for action in ("Approve prod", "Promote to", "Roll back", "Start a run", ">Cancel<"):
        assert action not in page, action
    assert page.count('method="post"') == 1  # log out, nothing else
    variables = client.get("/ui/stacks/hello/variables").text
    assert 'action="/ui/stacks/hello/secrets"' not in variables
    for data in ({"stage": "prod", "csrf_token": csrf}, {"stage": "prod"}):
        forged = client.post("/ui/stacks/hello/approve", data=data)
        assert forged.status_code == 403
        assert "text/html" in forged.headers["content-type"]
    forged_secret = client.post(
        "/ui/stacks/hello/secrets",
        data={"scope": "stage:dev", "name": "K", "value": "v", "csrf_token": csrf},
    )
    assert forged_secret.status_code == 403
    assert yard.services.runs.get("hello", number).status is RunStatus.WAITING
    refused = [e for e in audit(yard, user="carol") if e["result"] == "refused"]
    assert [e["action"] for e in refused] == ["change_secret", "approve", "approve"]
    assert all(e["via"] == "console" for e in refused)
    assert "CSRF token is missing or wrong" in str(refused[1]["detail"])
    assert "this takes deploy on stack hello" in str(refused[2]["detail"])


def test_a_deployer_off_the_approvers_sees_no_approve_button(yard: AccessYard) -> None:
    protect_prod(yard)
    number = run_at_gate(yard)
    yard.services.runs.resume_interrupted()
    wait_for(lambda: yard.services.runs.get("hello", number), waiting)
    bob, csrf = _login(yard, "deployer", "10.3.0.1")
    page = bob.get("/ui/stacks/hello").text
    assert "Approve prod" not in page
    assert "Promote to dev" in page  # dev is not protected
    forged = bob.post("/ui/stacks/hello/approve", data={"stage": "prod", "csrf_token": csrf})
    assert forged.status_code == 403
    dave, csrf = _login(yard, "dave", "10.3.0.2")
    page = dave.get("/ui/stacks/hello").text
    assert "Approve prod" in page
    assert "Promote to prod" not in page  # dave approves prod but does not deploy it
    approved = dave.post("/ui/stacks/hello/approve", data={"stage": "prod", "csrf_token": csrf})
    assert approved.status_code == 200
    assert "approved by dave" in approved.text


def test_the_audit_page_shows_who_did_what(yard: AccessYard) -> None:
    yard.client.put(
        "/api/v1/stacks/hello/variables/GREETING?stage=dev",
        json={"value": "hi"},
        headers={**yard.auth("deployer"), "User-Agent": "stackyard-cli/0.1.0"},
    )
    client, _ = _login(yard, "viewer", "10.4.0.1")
    html = client.get("/ui/audit?stack=hello").text
    row = html[html.index("set_variable") - 600 : html.index("set_variable") + 400]
    assert "bob" in row
    assert "cli" in row
    assert "GREETING" in html
    assert "stage=dev" in row


# -- fail closed


def test_a_route_without_a_permission_is_refused(yard: AccessYard) -> None:
    needs = yard.client.app.state.needs  # type: ignore[attr-defined]
    need = needs.pop(people_routes.whoami)
    try:
        answer = yard.client.get("/api/v1/whoami", headers=yard.auth("admin"))
        assert answer.status_code == 403
        assert answer.json()["error"] == (
            "no permission is declared for this route, so it is refused"
        )
    finally:
        needs[people_routes.whoami] = need


def test_a_secret_value_never_reaches_the_audit_log(yard: AccessYard) -> None:
    value = "hunter2-never-in-the-audit-log"
    answer = yard.client.put(
        "/api/v1/stacks/hello/secrets/DB_PASSWORD?stage=dev",
        json={"value": value},
        headers=yard.auth("deployer"),
    )
    assert answer.status_code == 200, answer.text
    client, csrf = _login(yard, "deployer", "10.5.0.1")
    client.post(
        "/ui/stacks/hello/secrets",
        data={"scope": "stage:dev", "action": "set", "name": "API_KEY", "value": value,
              "csrf_token": csrf},
    )  # fmt: skip
    entries = audit(yard, stack="hello")
    assert {e["action"] for e in entries} >= {"set_secret", "change_secret"}
    assert value not in str(entries)
    assert yard.tokens["deployer"] not in str(audit(yard))  # the login form's token neither
    secret = next(e for e in entries if e["action"] == "set_secret")
    assert secret["parameters"] == {"key": "DB_PASSWORD", "stage": "dev", "value": "***"}
    assert COOKIE not in str(entries)


# -- notification channels: their URLs are secrets


def test_a_channels_secret_url_is_added_by_a_person_who_deploys_and_read_by_nobody(
    yard: AccessYard,
) -> None:
    """A viewer cannot add a channel, nor can a stack's CI tokens (which must not be able to
    silence the team's alerts); a deployer adds one, and from then on nobody, admins
    included, reads its URL, SMTP password or signing secret back: not in a list, not in the
    deliveries, not in the audit log, not in the store."""
    base = "/api/v1/stacks/hello/notify"
    token = "xoxb-the-channels-secret-path-4242"
    slack = {"kind": "slack", "target": f"https://hooks.slack.com/services/T0/B0/{token}"}
    topic = "our-secret-ntfy-topic-1717"
    hook = {"kind": "webhook", "target": f"https://ntfy.sh/{topic}"}
    password = "smtp-password-never-shown-99"
    smtp = {"host": "127.0.0.1", "port": 2525, "security": "none", "password": password}
    mail = {"kind": "email", "target": "ops@example.com", "smtp": smtp}
    for label in ("viewer", "read hello", "push hello", "deploy hello"):
        for body in (slack, hook, mail):
            answer = yard.client.post(base, json=body, headers=yard.auth(label))
            assert answer.status_code == 403, (label, answer.text)
            assert answer.json()["error"].startswith("forbidden: this takes "), label
    refused = yard.client.post(base, json=slack, headers=yard.auth("deploy hello")).json()
    assert refused["permission"] == (
        "deploy on stack hello, with a person's own token (not one scoped to a stack)"
    )
    assert yard.client.get(base, headers=yard.auth("admin")).json()["channels"] == []

    added = [yard.client.post(base, json=b, headers=yard.auth("deployer")) for b in (slack, hook)]
    added.append(yard.client.post(base, json=mail, headers=yard.auth("dave")))
    assert [a.status_code for a in added] == [201, 201, 201], [a.text for a in added]
    signing = added[1].json()["signing_secret"]
    assert len(signing) == 64  # shown once, to who added it
    assert [a.json()["shown"] for a in added] == [
        "https://hooks.slack.com/…",
        "https://ntfy.sh/…",
        "ops@example.com",
    ]
    secrets = (token, topic, password, signing)
    assert not [s for s in secrets if s in added[0].text + added[2].text]

    for label in ("viewer", "read hello", "deploy hello", "deployer", "admin", "bootstrap"):
        for path in (base, f"{base}/deliveries"):
            answer = yard.client.get(path, headers=yard.auth(label))
            assert answer.status_code == 200, (label, path, answer.text)
            assert not [s for s in secrets if s in answer.text], (label, path)
        assert len(yard.client.get(base, headers=yard.auth(label)).json()["channels"]) == 3
    assert yard.client.get(base, headers=yard.auth("push hello")).status_code == 403

    for label in ("viewer", "deploy hello"):
        answer = yard.client.delete(f"{base}/1", headers=yard.auth(label))
        assert answer.status_code == 403, (label, answer.text)
    assert yard.client.delete(f"{base}/1", headers=yard.auth("deployer")).status_code == 200

    entries = audit(yard, stack="hello")
    assert not [s for s in secrets if s in str(entries)]
    tries = [e for e in entries if e["action"] == "add_channel"]
    assert sorted(e["result"] for e in tries) == ["ok"] * 3 + ["refused"] * 13
    assert {str(e["parameters"]["target"]) for e in tries} == {"***"}  # type: ignore[index]
    with yard.sessions() as session:
        stored = session.execute(select(NotificationChannel.sealed, NotificationChannel.shown))
        rows = stored.all()
    assert [shown for _, shown in rows] == ["https://ntfy.sh/…", "ops@example.com"]
    assert not [s for s in secrets if s in str(rows)]  # sealed at rest
