"""The platform's git remote (auth, CGI environment, hook, push reports) and polling.

Routes run in the real app on a real SQLite store, with a recording `start_run`; the
poller runs against a `Source` fake whose branch tips the test sets.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from stackyard.api.routes.git import basic_password
from stackyard.cli.triggers import remote_url
from stackyard.errors import (
    ComponentError,
    PermanentError,
    RetryableError,
    StackyardError,
    UsageError,
)
from stackyard.pipeline.poller import PolledStack, Poller, due, new_commit
from stackyard.pipeline.services import Services
from stackyard.source.base import Commit, Source
from stackyard.source.git import parse_ls_remote
from stackyard.source.remote import (
    BackendRequest,
    HostedRemotes,
    Push,
    backend_environ,
    ignore_reason,
    parse_cgi_head,
    parse_ref_updates,
    post_receive_hook,
)
from stackyard.stacks.service import StackChanges
from stackyard.store.models import PipelineRun, Stack
from tests.recording_runs import RecordingRuns, recording_api

TOKEN = "admin-token-for-tests"
OLD = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
NEW = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
ZERO = "0" * 40


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@dataclass
class Harness:
    client: TestClient
    services: Services
    runs: RecordingRuns
    data_dir: Path


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with recording_api(tmp_path, TOKEN, {"hello": "/srv/git/hello.git"}) as api:
        yield Harness(TestClient(api.app), api.services, api.runs, tmp_path)


# -- Basic auth on /git ---------------------------------------------------------------


INFO_REFS = "/git/hello.git/info/refs?service=git-receive-pack"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("stackyard", "wrong"),
        basic("stackyard", ""),
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic !!notbase64"},
        {"Authorization": "Digest username=stackyard"},
    ],
)
def test_git_routes_refuse_without_the_token(harness: Harness, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", INFO_REFS),
        ("POST", "/git/hello.git/git-receive-pack"),
        ("POST", "/git/hello.git/git-upload-pack"),
    ):
        response = harness.client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == 'Basic realm="stackyard"'
        assert response.headers["content-type"].startswith("text/plain")
        assert "stackyard remote hello" in response.text
    assert not (harness.data_dir / "remotes").exists()


def test_unknown_stack_is_404_with_a_message_git_shows(harness: Harness) -> None:
    response = harness.client.get(
        "/git/nope.git/info/refs?service=git-upload-pack", headers=basic("me", TOKEN)
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == (
        "stackyard: no stack named 'nope'; create it with "
        "`stackyard stacks create nope --repo ...`\n"
    )


def test_only_the_smart_protocol_is_served(harness: Harness) -> None:
    auth = basic("me", TOKEN)
    assert harness.client.get("/git/hello.git/info/refs", headers=auth).status_code == 404
    assert harness.client.get("/git/hello.git/HEAD", headers=auth).status_code == 404
    assert harness.client.get("/git/hello.git/git-receive-pack", headers=auth).status_code == 404


def test_info_refs_with_the_token_creates_the_remote(harness: Harness) -> None:
    response = harness.client.get(INFO_REFS, headers=basic("anyone", TOKEN))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-git-receive-pack-advertisement"
    assert response.content.startswith(b"001f# service=git-receive-pack\n")
    assert (harness.data_dir / "remotes" / "hello.git" / "hooks" / "post-receive").exists()


def test_credentials_parsing() -> None:
    assert basic_password(basic("u", "p:with:colons")["Authorization"]) == ("u", "p:with:colons")
    assert basic_password("Bearer abc") == ("stackyard", "abc")
    assert basic_password(None) is None
    assert basic_password("Basic " + base64.b64encode(b"nocolon").decode()) is None


def test_remote_url_embeds_the_token() -> None:
    assert remote_url("http://127.0.0.1:7878", "a/b+c", "hello") == (
        "http://stackyard:a%2Fb%2Bc@127.0.0.1:7878/git/hello.git"
    )


# -- the push report (what the post-receive hook sends) -------------------------------


def test_push_report_starts_a_run_for_the_branch_only(harness: Harness) -> None:
    updates = f"{OLD} {NEW} refs/heads/main\n{ZERO} {NEW} refs/heads/feature\n"
    response = harness.client.post(
        "/api/v1/stacks/hello/pushes",
        json={"updates": updates},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    assert response.status_code == 200, response.text
    assert harness.runs.calls == [
        {
            "stack": "hello",
            "trigger": "git push",
            "ref": "main",
            "commit": NEW,
            "before": OLD,
            "source_url": str(harness.data_dir / "remotes" / "hello.git"),
            "changed_paths": None,
            "pushed_by": "admin",  # the owner of the token the push report came with
        }
    ]
    assert response.json()["messages"] == [
        f"pipeline run 1 started for {NEW[:7]} \N{EM DASH} follow it: stackyard runs hello --watch",
        "nothing started: branch feature is not main; only pushes to main start a run",
    ]


def test_push_report_needs_a_token(harness: Harness) -> None:
    response = harness.client.post(
        "/api/v1/stacks/hello/pushes", json={"updates": f"{OLD} {NEW} refs/heads/main\n"}
    )
    assert response.status_code == 401
    assert harness.runs.calls == []


def test_push_report_of_a_deleted_branch_starts_nothing(harness: Harness) -> None:
    response = harness.client.post(
        "/api/v1/stacks/hello/pushes",
        json={"updates": f"{OLD} {ZERO} refs/heads/main\n"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.json()["messages"] == [
        "nothing started: branch main was deleted; nothing to build"
    ]
    assert harness.runs.calls == []


def test_push_report_of_a_refused_run(harness: Harness) -> None:
    harness.runs.error = UsageError("stack hello is paused", hint="resume it")
    response = harness.client.post(
        "/api/v1/stacks/hello/pushes",
        json={"updates": f"{OLD} {NEW} refs/heads/main\n"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.json()["messages"] == [
        f"no pipeline run for {NEW[:7]}: stack hello is paused (resume it)"
    ]


# -- hosted remotes and the CGI exchange, as data ---------------------------------------


def test_ensure_makes_a_bare_repo_that_accepts_pushes(tmp_path: Path) -> None:
    remotes = HostedRemotes(tmp_path / "remotes", python="/usr/bin/python3")

    repo = remotes.ensure("hello", "main")
    again = remotes.ensure("hello", "trunk")

    assert repo == again == tmp_path / "remotes" / "hello.git"
    config = subprocess.run(
        ["git", f"--git-dir={repo}", "config", "--bool", "http.receivepack"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert config.stdout.strip() == "true"
    hook = repo / "hooks" / "post-receive"
    assert os.access(hook, os.X_OK)
    assert hook.read_text() == post_receive_hook("/usr/bin/python3")
    assert (repo / "HEAD").read_text() == "ref: refs/heads/trunk\n"
    assert [p.name for p in (tmp_path / "remotes").iterdir()] == ["hello.git"]


def test_the_hook_holds_no_secret_and_starts_nothing_outside_the_platform(
    tmp_path: Path,
) -> None:
    script = post_receive_hook(sys.executable)
    assert TOKEN not in script
    assert "STACKYARD_HOOK_TOKEN" in script
    hook = tmp_path / "post-receive"
    hook.write_text(script)
    hook.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKYARD_")}
    result = subprocess.run(
        [str(hook)],
        input=f"{OLD} {NEW} refs/heads/main\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert "did not come through the platform's git remote; no run started" in result.stdout


def test_backend_environment(tmp_path: Path) -> None:
    request = BackendRequest(
        stack="hello",
        method="POST",
        path="git-upload-pack",
        query="",
        content_type="application/x-git-upload-pack-request",
        content_length="1234",
        content_encoding="gzip",
        git_protocol="version=2",
        remote_user="ann",
        remote_addr="127.0.0.1",
    )
    base = {"PATH": "/usr/bin", "GIT_DIR": "/elsewhere", "HTTP_PROXY": "http://evil:1"}

    env = backend_environ(
        request,
        root=tmp_path,
        hook_url="http://127.0.0.1:7878/api/v1/stacks/hello/pushes",
        hook_token=TOKEN,
        base=base,
    )

    assert env["GIT_PROJECT_ROOT"] == str(tmp_path)
    assert env["GIT_HTTP_EXPORT_ALL"] == "1"
    assert env["PATH_INFO"] == "/hello.git/git-upload-pack"
    assert env["REQUEST_METHOD"] == "POST"
    assert env["QUERY_STRING"] == ""
    assert env["CONTENT_TYPE"] == "application/x-git-upload-pack-request"
    assert env["CONTENT_LENGTH"] == "1234"
    assert env["HTTP_CONTENT_ENCODING"] == "gzip"
    assert env["HTTP_GIT_PROTOCOL"] == "version=2"
    assert env["REMOTE_USER"] == "ann"
    assert env["STACKYARD_HOOK_TOKEN"] == TOKEN
    assert "GIT_DIR" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0"

    chunked = BackendRequest(stack="hello", method="GET", path="info/refs", query="x=1")
    plain = backend_environ(chunked, root=tmp_path, hook_url="u", hook_token="t", base={})
    assert "CONTENT_LENGTH" not in plain
    assert "HTTP_CONTENT_ENCODING" not in plain


def test_parse_cgi_head() -> None:
    head = (
        b"Status: 404 Not Found\r\nExpires: Fri, 01 Jan 1980 00:00:00 GMT\r\nPragma: no-cache\r\n"
    )
    assert parse_cgi_head(head) == (
        404,
        [("Expires", "Fri, 01 Jan 1980 00:00:00 GMT"), ("Pragma", "no-cache")],
    )
    assert parse_cgi_head(b"Content-Type: text/plain\r\n") == (
        200,
        [("Content-Type", "text/plain")],
    )


def test_ref_updates_and_the_branch_filter() -> None:
    pushes = parse_ref_updates(
        f"{ZERO} {NEW} refs/heads/main\n\ngarbage\n{OLD} {ZERO} refs/tags/v1\n"
    )
    assert pushes == [Push("refs/heads/main", None, NEW), Push("refs/tags/v1", OLD, None)]
    assert ignore_reason(pushes[0], "main") is None
    assert ignore_reason(pushes[0], "prod") == (
        "branch main is not prod; only pushes to prod start a run"
    )
    assert ignore_reason(pushes[1], "main") == (
        "refs/tags/v1 is not a branch; only pushes to main start a run"
    )


def test_parse_ls_remote() -> None:
    output = f"{OLD}\trefs/heads/main\n{NEW}\trefs/heads/main-old\n"
    assert parse_ls_remote(output, "main") == OLD
    assert parse_ls_remote(output, "dev") is None
    assert parse_ls_remote("", "main") is None


# -- polling ----------------------------------------------------------------------------


@dataclass
class FakeSource(Source):
    """Branch tips the test sets; `head` is all the poller uses."""

    name: ClassVar[str] = "fake"
    supports_head: ClassVar[bool] = True
    tips: dict[tuple[str, str], str] = field(default_factory=dict)
    error: Exception | None = None
    asked: list[tuple[str, str]] = field(default_factory=list)

    def head(self, url: str, branch: str) -> str | None:
        self.asked.append((url, branch))
        if self.error is not None:
            raise self.error
        return self.tips.get((url, branch))

    def sync(self, stack: str, url: str) -> None:
        raise NotImplementedError

    def resolve(self, stack: str, url: str, ref: str | None, branch: str) -> Commit:
        raise NotImplementedError

    def checkout(self, stack: str, sha: str, dest: Path) -> Path:
        raise NotImplementedError

    def remove_checkout(self, stack: str, dest: Path) -> None:
        raise NotImplementedError

    def remove(self, stack: str) -> None:
        raise NotImplementedError

    def read_file(self, stack: str, sha: str, path: str) -> bytes | None:
        raise NotImplementedError

    def changed_paths(self, stack: str, old_sha: str | None, new_sha: str) -> list[str]:
        raise NotImplementedError


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Polling:
    harness: Harness
    source: FakeSource
    clock: Clock
    poller: Poller

    def last_seen(self, stack: str = "hello") -> str | None:
        with self.poller._sessions() as session:
            seen: str | None = session.scalar(
                select(Stack.poll_last_seen).where(Stack.name == stack)
            )
            return seen

    def restart(self) -> None:
        self.poller = Poller(
            self.poller._sessions, self.source, self.harness.runs, clock=self.clock
        )


@pytest.fixture
def polling(harness: Harness) -> Polling:
    harness.services.stacks.update("hello", StackChanges(poll_seconds=30))
    harness.services.stacks.create("quiet", StackChanges(repo="/srv/git/quiet.git"))
    source = FakeSource(tips={("/srv/git/hello.git", "main"): OLD})
    clock = Clock()
    sessions = harness.services.poller._sessions
    return Polling(harness, source, clock, Poller(sessions, source, harness.runs, clock=clock))


def poll_calls(runs: RecordingRuns) -> list[tuple[str | None, str | None]]:
    return [(call["commit"], call["before"]) for call in runs.calls]


def test_poll_starts_a_run_when_the_branch_moves(polling: Polling) -> None:
    runs = polling.harness.runs

    polling.poller.poll_due()  # first sight: run the branch's tip
    polling.clock.now += 30
    polling.poller.poll_due()  # unchanged: nothing
    polling.source.tips[("/srv/git/hello.git", "main")] = NEW
    polling.clock.now += 30
    polling.poller.poll_due()

    assert poll_calls(runs) == [(OLD, None), (NEW, OLD)]
    assert {call["trigger"] for call in runs.calls} == {"poll"}
    assert {call["ref"] for call in runs.calls} == {"main"}
    assert polling.last_seen() == NEW
    assert polling.source.asked == [("/srv/git/hello.git", "main")] * 3  # never "quiet"


def test_poll_waits_for_the_interval(polling: Polling) -> None:
    polling.poller.poll_due()
    polling.source.tips[("/srv/git/hello.git", "main")] = NEW
    polling.clock.now += 29
    polling.poller.poll_due()
    assert len(polling.source.asked) == 1
    polling.clock.now += 1
    polling.poller.poll_due()
    assert poll_calls(polling.harness.runs) == [(OLD, None), (NEW, OLD)]


def test_a_restart_does_not_start_the_same_run_again(polling: Polling) -> None:
    polling.poller.poll_due()
    polling.restart()
    polling.poller.poll_due()
    assert poll_calls(polling.harness.runs) == [(OLD, None)]


def test_first_poll_of_a_commit_already_run_starts_nothing(polling: Polling) -> None:
    with polling.poller._sessions.begin() as session:
        stack_id = session.scalar(select(Stack.id).where(Stack.name == "hello"))
        session.add(PipelineRun(stack_id=stack_id, number=1, commit_sha=OLD, trigger="git push"))
    polling.poller.poll_due()
    assert polling.harness.runs.calls == []
    assert polling.last_seen() == OLD
    polling.source.tips[("/srv/git/hello.git", "main")] = NEW
    polling.clock.now += 30
    polling.poller.poll_due()
    assert poll_calls(polling.harness.runs) == [(NEW, OLD)]


def test_a_webhook_run_is_not_polled_again(polling: Polling) -> None:
    polling.harness.services.poller.mark_seen("hello", OLD)
    polling.poller.poll_due()
    assert polling.harness.runs.calls == []


@pytest.mark.parametrize(
    "error", [RetryableError("busy"), ComponentError("database: disk I/O error")]
)
def test_a_retryable_refusal_is_tried_again(polling: Polling, error: StackyardError) -> None:
    assert error.retryable  # the property decides, not the class
    polling.harness.runs.error = error
    polling.poller.poll_due()
    assert polling.last_seen() is None
    polling.harness.runs.error = None
    polling.clock.now += 30
    polling.poller.poll_due()
    assert poll_calls(polling.harness.runs) == [(OLD, None)]


def test_an_unreachable_remote_starts_nothing(polling: Polling) -> None:
    polling.source.error = PermanentError("cannot fetch /srv/git/hello.git")
    polling.poller.poll_due()
    assert polling.harness.runs.calls == []
    assert polling.last_seen() is None


def test_poll_interval_limits(harness: Harness) -> None:
    stacks = harness.services.stacks
    assert stacks.update("hello", StackChanges(poll_seconds=10)).poll_seconds == 10
    assert stacks.update("hello", StackChanges(poll_seconds=0)).poll_seconds == 0
    for seconds in (5, -1, 86401):
        with pytest.raises(UsageError, match="out of range"):
            stacks.update("hello", StackChanges(poll_seconds=seconds))


def test_poll_decisions() -> None:
    stack = PolledStack("hello", "/r", "main", 30, OLD)
    assert new_commit(stack, OLD) is None
    assert new_commit(stack, None) is None
    assert new_commit(stack, NEW) == NEW
    other = PolledStack("other", "/r", "main", 60, None)
    assert due([stack, other], {"hello": 100.0, "other": 50.0}, 60.0) == [other]
    assert due([stack], {}, 0.0) == [stack]


def test_poller_thread_starts_and_stops(harness: Harness) -> None:
    poller = Poller(harness.services.poller._sessions, FakeSource(), harness.runs, tick=0.01)
    poller.start()
    poller.stop()
    assert poller._thread is None
