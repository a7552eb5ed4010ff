"""Notifications on a real platform, through the CLI: Slack, a signed webhook and email to
real receivers on the loopback; a deployment that completes, one that fails and is rolled
back (its reason masked, the digest it went back to), and a delivery that was pending when
the platform stopped, sent after it started again."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.receivers import HttpReceiver, SmtpSink, eventually, free_port

from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

SECRET = "tok-5ac1d2-never-notified"
STACKFILE = """\
stages:
  - name: dev
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 1, stop_timeout: 3}
"""
DOCKERFILE = """\
FROM busybox:latest
COPY www /www
CMD ["sh", "-c", "if [ \\"$CRASH\\" = 1 ]; then echo \\"token is $API_TOKEN\\"; exit 3; fi; \
exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]
"""


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path / "data")
    try:
        yield running
    finally:
        stop_platform(running)


def cli(yard: RunningPlatform, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACKYARD, *args],
        input=stdin,
        env=yard.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def deliveries(yard: RunningPlatform, stack: str) -> list[dict[str, Any]]:
    return list(json.loads(ok(cli(yard, "notify", "log", stack, "--limit", "100", "--json"))))


def slack_texts(receiver: HttpReceiver) -> list[str]:
    return [r.json()["text"] for r in receiver.received if r.path.startswith("/services")]


def by_kind(received: list[Any], kind: str) -> list[dict[str, Any]]:
    return [r.json() for r in received if r.path.startswith("/hook") and r.json()["event"] == kind]


def test_a_team_hears_of_deployments_rollbacks_and_tests_through_real_receivers(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    receiver = HttpReceiver().start()
    sink = SmtpSink().start()
    try:
        _run(yard, tmp_path, receiver, sink)
    finally:
        receiver.stop()
        sink.stop()


def _run(yard: RunningPlatform, tmp_path: Path, receiver: HttpReceiver, sink: SmtpSink) -> None:
    stack = "heard"
    repo = GitRepo.from_example("hello", tmp_path / stack)
    repo.write("stackyard.yml", STACKFILE)
    repo.write("Dockerfile", DOCKERFILE)
    repo.commit("crash on demand")
    ok(cli(yard, "stacks", "create", stack, "--repo", str(repo.path)))
    ok(cli(yard, "secrets", "set", stack, "API_TOKEN", stdin=SECRET))

    slack_url = receiver.url("/services/T0/B0/cli-slack-token")
    added = ok(cli(yard, "notify", "add", stack, "--slack", "-", stdin=slack_url + "\n"))
    assert "cli-slack-token" not in added
    assert f"http://127.0.0.1:{receiver.port}/…" in added
    hook = json.loads(
        ok(cli(yard, "notify", "add", stack, "--webhook", receiver.url("/hook"),
               "--events", "completed,rolled-back", "--json"))
    )  # fmt: skip
    assert hook["events"] == ["completed", "rolled-back"]
    secret = hook["signing_secret"]
    smtp = f"127.0.0.1:{sink.port}"
    email = ["--email", "ops@example.com", "--smtp", smtp, "--smtp-security", "none"]
    ok(
        cli(
            yard, "notify", "add", stack, *email, "--from", "yard@x.test", "--events", "rolled-back"
        )
    )
    listed = ok(cli(yard, "notify", "list", stack))
    assert "cli-slack-token" not in listed
    assert "ops@example.com via 127.0.0.1" in listed

    tested = cli(yard, "notify", "test", stack)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("DELIVERED") == 3

    # A deployment that completes: Slack and the webhook hear of it (email only listens
    # for rollbacks).
    ok(cli(yard, "build", stack))
    ok(cli(yard, "release", stack, "--stage", "dev"))
    ok(cli(yard, "deploy", stack, "--stage", "dev", "--json"))
    releases = json.loads(ok(cli(yard, "releases", stack, "--stage", "dev", "--json")))
    good = releases[0]["digest"]
    eventually(lambda: len(by_kind(receiver.received, "completed")) == 1, 60, "completed")
    [completed] = by_kind(receiver.received, "completed")
    assert completed["fields"]["Digest"] == good
    signed = next(r for r in receiver.received if r.path == "/hook" and b"completed" in r.body)
    expected = "sha256=" + hmac.new(secret.encode(), signed.body, hashlib.sha256).hexdigest()
    assert signed.headers["x-hub-signature-256"] == expected

    # Tasks that print the secret and crash: FAILED, rolled back to the good digest.
    ok(cli(yard, "env", "set", stack, "CRASH=1", "--stage", "dev"))
    eventually(lambda: len(by_kind(receiver.received, "rolled-back")) == 1, 120, "rolled back")
    [rolled] = by_kind(receiver.received, "rolled-back")
    assert rolled["fields"]["Back to digest"] == good
    assert rolled["fields"]["Back to release"] == "1"
    assert "token is ***" in rolled["text"]
    (_, _, trial), (_, recipients, mail) = sink.wait_for(2)  # the test, then the rollback
    assert "a test notification" in trial["Subject"]
    assert recipients == ["ops@example.com"]
    assert "rolled back to release 1" in mail["Subject"]
    assert f"Back to digest:  {good}" in mail.get_content()
    # Each channel is delivered on its own: Slack's message may come after the mail.
    eventually(
        lambda: any("rolled back to release 1" in text for text in slack_texts(receiver)),
        60,
        "Slack heard of the rollback",
    )
    everything = b"".join(r.body for r in receiver.received) + str(mail).encode()
    assert SECRET.encode() not in everything

    # A receiver that is down when the platform stops: its delivery waits for the next start.
    port = free_port()
    ok(cli(yard, "notify", "add", stack, "--webhook", f"http://127.0.0.1:{port}/later"))
    cli(yard, "notify", "test", stack)  # the new channel fails: nothing listens there yet
    [pending] = [d for d in deliveries(yard, stack) if d["channel"] == 4]
    assert pending["status"] == "PENDING"
    assert "could not be reached" in pending["last_error"]
    stop_platform(yard)
    later = HttpReceiver(port).start()
    try:
        again = start_platform(yard.data_dir)
        yard.__dict__.update(again.__dict__)  # the fixture stops the platform now running
        [arrived] = later.wait_for(1, timeout=60)
        assert arrived.json()["event"] == "test"
        eventually(
            lambda: (
                [d["status"] for d in deliveries(yard, stack) if d["channel"] == 4] == ["DELIVERED"]
            ),
            30,
            "the pending delivery recorded as delivered",
        )
    finally:
        later.stop()
