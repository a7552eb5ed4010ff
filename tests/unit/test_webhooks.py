"""GitHub and GitLab webhooks: verified pushes to the stack's branch start one run.

The app is the real one, on a real (SQLite) store; `start_run` is a recording fake with
the same signature, so each test checks what was (or was not) passed to the pipeline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from stackyard.api.routes.hooks import (
    MAX_BODY,
    changed_paths,
    github_push,
    github_signature_ok,
    gitlab_push,
    gitlab_token_ok,
)
from stackyard.errors import ComponentError, PermanentError, RetryableError, StackyardError
from stackyard.pipeline.services import Services
from stackyard.source.remote import Push
from stackyard.store.models import Stack
from tests.recording_runs import RecordingRuns, recording_api

TOKEN = "admin-token-for-tests"
BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
AFTER = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
ZERO = "0" * 40

# A GitHub push event as GitHub sends it (trimmed of URLs that are not read).
GITHUB_PUSH: dict[str, Any] = {
    "ref": "refs/heads/main",
    "before": BEFORE,
    "after": AFTER,
    "repository": {
        "id": 186853002,
        "name": "shop",
        "full_name": "acme/shop",
        "private": True,
        "owner": {"name": "acme", "login": "acme"},
        "html_url": "https://github.com/acme/shop",
        "clone_url": "https://github.com/acme/shop.git",
        "default_branch": "main",
    },
    "pusher": {"name": "octocat", "email": "octocat@github.com"},
    "sender": {"login": "octocat", "id": 583231, "type": "User"},
    "created": False,
    "deleted": False,
    "forced": False,
    "base_ref": None,
    "compare": f"https://github.com/acme/shop/compare/{BEFORE[:12]}...{AFTER[:12]}",
    "commits": [
        {
            "id": "a10867b14bb761a232cd80139fbd4c0d33264240",
            "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
            "distinct": True,
            "message": "api: add orders endpoint",
            "timestamp": "2026-11-21T14:03:21+01:00",
            "url": "https://github.com/acme/shop/commit/a10867b14bb761a232cd80139fbd4c0d33264240",
            "author": {"name": "Octo Cat", "email": "octocat@github.com", "username": "octocat"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": ["services/api/orders.py"],
            "removed": [],
            "modified": ["services/api/main.py", "README.md"],
        },
        {
            "id": AFTER,
            "tree_id": "b0e6f1d2b4d4f07a4dbd2b8e2c1d1f5c4d4a3b2a",
            "distinct": True,
            "message": "web: drop the old banner",
            "timestamp": "2026-11-21T14:05:02+01:00",
            "url": f"https://github.com/acme/shop/commit/{AFTER}",
            "author": {"name": "Octo Cat", "email": "octocat@github.com", "username": "octocat"},
            "committer": {"name": "Octo Cat", "email": "octocat@github.com", "username": "octocat"},
            "added": [],
            "removed": ["services/web/banner.png"],
            "modified": ["services/api/main.py"],
        },
    ],
    "head_commit": {"id": AFTER, "message": "web: drop the old banner"},
}

GITLAB_PUSH: dict[str, Any] = {
    "object_kind": "push",
    "event_name": "push",
    "before": BEFORE,
    "after": AFTER,
    "ref": "refs/heads/main",
    "ref_protected": True,
    "checkout_sha": AFTER,
    "user_username": "jsmith",
    "project_id": 15,
    "project": {"name": "shop", "path_with_namespace": "acme/shop", "default_branch": "main"},
    "commits": [
        {
            "id": AFTER,
            "message": "api: add orders endpoint",
            "timestamp": "2026-11-21T14:03:21+01:00",
            "author": {"name": "Jordi Mallach", "email": "jordi@example.org"},
            "added": ["services/api/orders.py"],
            "modified": ["services/api/main.py"],
            "removed": [],
        }
    ],
    "total_commits_count": 1,
    "repository": {"name": "shop", "git_http_url": "https://gitlab.example.com/acme/shop.git"},
}

CHANGED = [
    "README.md",
    "services/api/main.py",
    "services/api/orders.py",
    "services/web/banner.png",
]


@dataclass
class Harness:
    client: TestClient
    services: Services
    runs: RecordingRuns

    @property
    def secret(self) -> str:
        return self.services.stacks.webhook_secret("shop")

    def github(
        self,
        payload: dict[str, Any] | bytes,
        *,
        event: str = "push",
        secret: str | None = None,
        signature: str | None = None,
        stack: str = "shop",
        content_type: str = "application/json",
        delivery: str | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"X-GitHub-Event": event, "Content-Type": content_type}
        if delivery is not None:
            headers["X-GitHub-Delivery"] = delivery
        if signature is None:
            signature = sign(secret or self.secret, body)
        if signature:
            headers["X-Hub-Signature-256"] = signature
        return self.client.post(f"/api/v1/hooks/github/{stack}", content=body, headers=headers)

    def gitlab(
        self,
        payload: dict[str, Any],
        *,
        event: str = "Push Hook",
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        headers = {"X-Gitlab-Event": event, "Content-Type": "application/json", **(headers or {})}
        if token != "":
            headers["X-Gitlab-Token"] = token or self.secret
        return self.client.post("/api/v1/hooks/gitlab/shop", json=payload, headers=headers)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    stacks = {
        "shop": "https://github.com/acme/shop.git",
        "other": "https://github.com/acme/other.git",
    }
    with recording_api(tmp_path, TOKEN, stacks) as api:
        yield Harness(TestClient(api.app), api.services, api.runs)


# -- GitHub -----------------------------------------------------------------------------


def test_signed_push_starts_a_run_with_the_changed_paths(harness: Harness) -> None:
    response = harness.github(GITHUB_PUSH)

    assert response.status_code == 202, response.text
    assert response.json()["message"] == f"pipeline run 1 started for {AFTER[:7]}"
    assert response.json()["run"]["number"] == 1
    assert harness.runs.calls == [
        {
            "stack": "shop",
            "trigger": "github push",
            "ref": "main",
            "commit": AFTER,
            "before": BEFORE,
            "source_url": None,
            "changed_paths": CHANGED,
            "pushed_by": "octocat",  # as the payload says
        }
    ]


def test_a_delivery_received_again_answers_with_its_run_and_starts_none(
    harness: Harness,
) -> None:
    """GitHub's "Redeliver" (and a git host's retry after a timeout) sends the same push
    with the same delivery id: before, each one started a run that built it again."""
    first = harness.github(GITHUB_PUSH, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert first.status_code == 202, first.text
    again = harness.github(GITHUB_PUSH, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert again.status_code == 200, again.text
    assert again.json()["message"] == (
        "delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 was received before: pipeline run 1"
    )
    assert again.json()["run"]["number"] == 1
    other = harness.github(GITHUB_PUSH, delivery="another-delivery")  # a new push event
    assert other.json()["run"]["number"] == 2
    assert [c["delivery"] for c in harness.runs.calls] == [
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "another-delivery",
    ]
    # GitLab: a retry keeps its Idempotency-Key; a resent event, its UUID.
    retried = {"Idempotency-Key": "f7c1", "X-Gitlab-Event-UUID": "u-1"}
    assert harness.gitlab(GITLAB_PUSH, headers=retried).status_code == 202
    assert harness.gitlab(GITLAB_PUSH, headers=retried).status_code == 200
    assert harness.gitlab(GITLAB_PUSH, headers={"X-Gitlab-Event-UUID": "u-2"}).status_code == 202
    assert harness.gitlab(GITLAB_PUSH, headers={"X-Gitlab-Event-UUID": "u-2"}).status_code == 200
    assert [c["delivery"] for c in harness.runs.calls][2:] == ["f7c1", "u-2"]


@pytest.mark.parametrize(
    "signature",
    [
        "",  # missing
        "sha256=" + "0" * 64,
        "sha1=0123456789abcdef0123456789abcdef01234567",
        "sha256=not-hex",
    ],
)
def test_bad_or_missing_signature_is_401_and_starts_nothing(
    harness: Harness, signature: str
) -> None:
    response = harness.github(GITHUB_PUSH, signature=signature)

    assert response.status_code == 401
    assert "not verified" in response.json()["error"]
    assert harness.runs.calls == []


def test_signature_with_another_secret_is_401(harness: Harness) -> None:
    other_secret = harness.services.stacks.webhook_secret("other")
    assert harness.github(GITHUB_PUSH, secret=other_secret).status_code == 401
    assert harness.runs.calls == []


def test_signature_over_another_body_is_401(harness: Harness) -> None:
    body = json.dumps(GITHUB_PUSH).encode()
    tampered = body.replace(b"refs/heads/main", b"refs/heads/mail")
    response = harness.github(tampered, signature=sign(harness.secret, body))
    assert response.status_code == 401
    assert harness.runs.calls == []


def test_unknown_stack_is_401_like_a_bad_signature(harness: Harness) -> None:
    response = harness.github(GITHUB_PUSH, stack="nope", secret="guess")
    assert response.status_code == 401
    assert harness.runs.calls == []


def test_admin_token_is_no_signature(harness: Harness) -> None:
    response = harness.client.post(
        "/api/v1/hooks/github/shop",
        json=GITHUB_PUSH,
        headers={"X-GitHub-Event": "push", "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 401
    assert harness.runs.calls == []


def test_ping_is_200(harness: Harness) -> None:
    response = harness.github({"zen": "Design for failure.", "hook_id": 1}, event="ping")
    assert response.status_code == 200
    assert response.json() == {"message": "pong"}
    assert harness.runs.calls == []


def test_unknown_event_is_400(harness: Harness) -> None:
    response = harness.github({"action": "opened"}, event="issues")
    assert response.status_code == 400
    assert "'issues' is not handled" in response.json()["error"]
    assert harness.runs.calls == []


def test_push_to_another_branch_is_ignored_with_202(harness: Harness) -> None:
    response = harness.github({**GITHUB_PUSH, "ref": "refs/heads/feature"})

    assert response.status_code == 202
    assert response.json()["message"] == (
        "ignored: branch feature is not main; only pushes to main start a run"
    )
    assert response.json()["run"] is None
    assert harness.runs.calls == []


def test_tag_push_and_branch_deletion_are_ignored(harness: Harness) -> None:
    tag = harness.github({**GITHUB_PUSH, "ref": "refs/tags/v1.0.0"})
    deleted = harness.github({**GITHUB_PUSH, "after": ZERO, "deleted": True, "commits": []})

    assert (tag.status_code, deleted.status_code) == (202, 202)
    assert "refs/tags/v1.0.0 is not a branch" in tag.json()["message"]
    assert "branch main was deleted" in deleted.json()["message"]
    assert harness.runs.calls == []


def test_body_over_5_mib_is_413(harness: Harness) -> None:
    declared = harness.client.post(
        "/api/v1/hooks/github/shop",
        content=b"{}",
        headers={"X-GitHub-Event": "push", "Content-Length": str(MAX_BODY + 1)},
    )
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the read size decides
        for _ in range(6):
            yield b" " * (1024 * 1024)

    streamed = harness.client.post(
        "/api/v1/hooks/github/shop", content=chunks(), headers={"X-GitHub-Event": "push"}
    )
    assert streamed.status_code == 413
    assert harness.runs.calls == []


def test_form_encoded_payload(harness: Harness) -> None:
    body = urlencode({"payload": json.dumps(GITHUB_PUSH)}).encode()
    response = harness.github(body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202, response.text
    assert harness.runs.calls[0]["commit"] == AFTER


def test_broken_json_is_400(harness: Harness) -> None:
    assert harness.github(b"{not json").status_code == 400
    assert harness.github(b'{"ref": 1}').status_code == 400
    assert harness.runs.calls == []


def test_pipeline_refusal_is_reported_and_retryable_is_503(harness: Harness) -> None:
    harness.runs.error = RetryableError("the store is busy")
    response = harness.github(GITHUB_PUSH)
    assert response.status_code == 503
    assert response.json()["error"] == "no run started: the store is busy"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ComponentError("the engine is down"), 503),
        (ComponentError("git is not installed", retryable=False), 500),
        (PermanentError("the registry refused the login"), 500),
    ],
)
def test_a_refusal_is_503_exactly_when_a_retry_may_help(
    harness: Harness, error: StackyardError, status: int
) -> None:
    harness.runs.error = error
    assert harness.github(GITHUB_PUSH).status_code == status


def test_a_started_run_is_remembered_for_polling(harness: Harness) -> None:
    harness.github(GITHUB_PUSH)
    sessions = harness.services.poller._sessions
    with sessions() as session:
        seen = session.scalar(select(Stack.poll_last_seen).where(Stack.name == "shop"))
    assert seen == AFTER


# -- GitLab -----------------------------------------------------------------------------


def test_gitlab_push_with_the_token_starts_a_run(harness: Harness) -> None:
    response = harness.gitlab(GITLAB_PUSH)

    assert response.status_code == 202, response.text
    assert harness.runs.calls == [
        {
            "stack": "shop",
            "trigger": "gitlab push",
            "ref": "main",
            "commit": AFTER,
            "before": BEFORE,
            "source_url": None,
            "changed_paths": ["services/api/main.py", "services/api/orders.py"],
            "pushed_by": "jsmith",  # as the payload says
        }
    ]


@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_gitlab_wrong_or_missing_token_is_401(harness: Harness, token: str) -> None:
    assert harness.gitlab(GITLAB_PUSH, token=token).status_code == 401
    assert harness.runs.calls == []


def test_gitlab_other_events(harness: Harness) -> None:
    merge = harness.gitlab({"object_kind": "merge_request"}, event="Merge Request Hook")
    tag = harness.gitlab({**GITLAB_PUSH, "ref": "refs/tags/v1"}, event="Tag Push Hook")

    assert merge.status_code == 400
    assert tag.status_code == 202  # GitLab disables hooks that keep getting 4xx
    assert harness.runs.calls == []


# -- the admin route ----------------------------------------------------------------------


def test_webhook_route_needs_the_token_and_keeps_one_secret(harness: Harness) -> None:
    assert harness.client.get("/api/v1/stacks/shop/webhook").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}

    first = harness.client.get("/api/v1/stacks/shop/webhook", headers=auth).json()
    again = harness.client.get("/api/v1/stacks/shop/webhook", headers=auth).json()

    assert first == again
    assert len(first["secret"]) == 64
    assert first["github_url"] == "http://testserver/api/v1/hooks/github/shop"
    assert first["gitlab_url"] == "http://testserver/api/v1/hooks/gitlab/shop"
    missing = harness.client.get("/api/v1/stacks/nope/webhook", headers=auth)
    assert missing.status_code == 404


# -- the deciding functions ---------------------------------------------------------------


def test_signature_check() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    good = sign("s3cret", body)
    assert github_signature_ok("s3cret", body, good)
    assert github_signature_ok("s3cret", body, good.upper().replace("SHA256=", "sha256="))
    assert not github_signature_ok("s3cret", body + b" ", good)
    assert not github_signature_ok("other", body, good)
    assert not github_signature_ok("s3cret", body, None)
    assert not github_signature_ok("s3cret", body, good.removeprefix("sha256="))


def test_gitlab_token_check() -> None:
    assert gitlab_token_ok("s3cret", "s3cret")
    assert not gitlab_token_ok("s3cret", "s3cret ")
    assert not gitlab_token_ok("s3cret", None)
    assert not gitlab_token_ok("s3cret", "")


def test_changed_paths_from_a_real_payload() -> None:
    assert list(changed_paths(GITHUB_PUSH["commits"])) == CHANGED
    assert github_push(GITHUB_PUSH) == Push("refs/heads/main", BEFORE, AFTER, tuple(CHANGED))


@pytest.mark.parametrize(
    "change",
    [
        {"created": True, "before": ZERO},  # a new branch: commits are not the whole diff
        {"forced": True},  # a force push: commits left behind are not listed
        {"commits": []},  # e.g. a push of commits GitHub saw before
    ],
)
def test_incomplete_commit_lists_leave_the_diff_to_the_pipeline(change: dict[str, Any]) -> None:
    push = github_push({**GITHUB_PUSH, **change})
    assert push.changed_paths is None
    assert push.after == AFTER


def test_gitlab_lists_at_most_20_commits() -> None:
    assert gitlab_push(GITLAB_PUSH).changed_paths == (
        "services/api/main.py",
        "services/api/orders.py",
    )
    assert gitlab_push({**GITLAB_PUSH, "total_commits_count": 45}).changed_paths is None
    new_branch = gitlab_push({**GITLAB_PUSH, "before": ZERO})
    assert (new_branch.before, new_branch.changed_paths) == (None, None)


def test_rotating_the_secret_retires_the_old_one(harness: Harness) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert harness.client.post("/api/v1/stacks/shop/webhook/rotate").status_code == 401
    old = harness.secret
    rotated = harness.client.post("/api/v1/stacks/shop/webhook/rotate", headers=auth).json()

    assert rotated["secret"] != old
    assert len(rotated["secret"]) == 64
    assert harness.client.get("/api/v1/stacks/shop/webhook", headers=auth).json() == rotated
    assert harness.github(GITHUB_PUSH, secret=old).status_code == 401
    assert harness.github(GITHUB_PUSH, secret=rotated["secret"]).status_code == 202
