"""Notifications on the platform's own services (FakeEngine, FakeRouter, real SQLite, the
real controller and delivery worker threads) and through the API: a receiver that never
answers holds up no deployment; channels are added, listed, tested and removed over HTTP
with their secrets kept out of every answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stackyard.api.app import ApiContext, create_app
from stackyard.engines.fake import FakeEngine
from stackyard.notify.channels import NewChannel
from stackyard.notify.delivery import WorkerSettings
from stackyard.notify.events import parse_events
from stackyard.notify.retry import RetryPolicy
from stackyard.pipeline.releases import config_snapshot
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, Release, Stack
from tests.receivers import HttpReceiver, eventually, http_receiver

STACK = "shop"
V1 = "sha256:" + "1" * 64
TOKEN = "t0ken"
CONFIG: dict[str, Any] = {
    "stages": [
        {
            "name": "dev",
            "replicas": 1,
            "health": {"type": "docker"},
            "deploy": {"drain_seconds": 0, "stop_timeout": 1},
        }
    ]
}


class Platform:
    def __init__(self, tmp: Path) -> None:
        self.settings = Settings(data_dir=tmp / "data", public_url="https://yard.example.com/")
        self.settings.data_dir.mkdir()
        self.database = open_database(self.settings.database_url)
        migrate(self.database)
        self.sessions = session_factory(self.database)
        self.services: Services = build_services(
            self.settings,
            self.sessions,
            RegistryLogin(self.settings.registry_endpoint, "stackyard", "registry-password"),
            engine=FakeEngine(),
            router=FakeRouter(),
            notify_settings=WorkerSettings(policy=RetryPolicy(first=0.2, attempts=3), idle=5),
        )
        with self.sessions.begin() as session:
            stack = Stack(name=STACK, repo=str(tmp / "repo"))
            session.add(stack)
            session.flush()
            self.stack_id = stack.id
            session.add(
                Build(
                    stack_id=stack.id,
                    number=1,
                    commit_sha="a" * 40,
                    status="SUCCEEDED",
                    digest=V1,
                    config=CONFIG,
                )
            )
        self.releases = 0
        self.services.notify.start()

    def ship(self) -> int:
        """A new release of dev, deployed; the deployment's number once it ended."""
        self.releases += 1
        with self.sessions.begin() as session:
            session.add(
                Release(
                    stack_id=self.stack_id,
                    stage="dev",
                    number=self.releases,
                    digest=V1,
                    build_number=1,
                    config=config_snapshot(CONFIG, "dev"),
                )
            )
        deployment = self.services.deploy.deploy(STACK, "dev", self.releases, trigger="test")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self.services.deploy.get(STACK, "dev", deployment.number)
            if found.status in ("COMPLETED", "FAILED"):
                assert found.status == "COMPLETED", found
                return found.number
            time.sleep(0.05)
        raise AssertionError(f"deployment {deployment.number} did not end")

    def api(self) -> TestClient:
        app = create_app(ApiContext(self.settings, TOKEN, {}, self.services))
        return TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})

    def close(self) -> None:
        self.services.close()
        self.database.dispose()


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path)
    try:
        yield platform
    finally:
        platform.close()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    yield from http_receiver()


def test_a_receiver_that_never_answers_holds_up_no_deployment(
    yard: Platform, receiver: HttpReceiver
) -> None:
    receiver.script.hold.clear()  # every request waits until the test lets it go
    notify = yard.services.notify
    notify.add(STACK, NewChannel("slack", receiver.url("/services/T/B/x"), parse_events([])))

    first = yard.ship()
    assert receiver.script.holding.wait(timeout=30)  # the worker is stuck at the receiver
    second = yard.ship()  # and a deployment still goes through, start to end
    assert (first, second) == (1, 2)
    pending = notify.deliveries(STACK)
    assert [(d.kind, d.status, d.attempts) for d in pending] == [
        ("completed", "PENDING", 0),
        ("completed", "PENDING", 0),
    ]

    receiver.script.hold.set()
    eventually(
        lambda: [d.status for d in notify.deliveries(STACK)] == ["DELIVERED", "DELIVERED"],
        what="both delivered once the receiver answers",
    )
    titles = sorted(r.json()["text"] for r in receiver.wait_for(2))
    assert titles == [
        f"{STACK}/dev: deployment 1 COMPLETED",
        f"{STACK}/dev: deployment 2 COMPLETED",
    ]
    link = receiver.received[0].json()["attachments"][0]["blocks"][-1]["elements"][0]["text"]
    assert link.startswith(f"<https://yard.example.com/ui/stacks/{STACK}|")


def test_channels_through_the_api_never_show_their_secrets(
    yard: Platform, receiver: HttpReceiver
) -> None:
    api = yard.api()
    base = f"/api/v1/stacks/{STACK}/notify"
    token_url = receiver.url("/services/T0/B0/api-token-77")
    added = api.post(base, json={"kind": "slack", "target": token_url, "events": ["completed"]})
    assert added.status_code == 201, added.text
    assert added.json()["shown"] == f"http://127.0.0.1:{receiver.port}/…"
    assert added.json()["signing_secret"] is None
    hook = api.post(base, json={"kind": "webhook", "target": receiver.url("/hook")}).json()
    assert len(hook["signing_secret"]) == 64
    assert hook["events"] == [
        "approval", "completed", "failed", "rolled-back", "build-failed", "healed", "certificate"
    ]  # fmt: skip

    listing = api.get(base)
    assert listing.status_code == 200
    assert [c["number"] for c in listing.json()["channels"]] == [1, 2]
    assert "api-token-77" not in listing.text
    assert hook["signing_secret"] not in listing.text
    assert set(listing.json()["events"]) == {
        "approval", "completed", "failed", "rolled-back", "build-failed", "healed", "certificate"
    }  # fmt: skip

    tested = api.post(f"{base}/test")
    assert tested.status_code == 200, tested.text
    report = tested.json()
    assert [(c["channel"], c["status"], c["detail"]) for c in report["channels"]] == [
        (1, "DELIVERED", "HTTP 200"),
        (2, "DELIVERED", "HTTP 200"),
    ]
    log = api.get(f"{base}/deliveries").json()["deliveries"]
    assert [(d["kind"], d["channel"], d["status"]) for d in log] == [
        ("test", 2, "DELIVERED"),
        ("test", 1, "DELIVERED"),
    ]
    assert "api-token-77" not in str(log)

    removed = api.delete(f"{base}/1")
    assert removed.status_code == 200
    assert [c["number"] for c in api.get(base).json()["channels"]] == [2]
    assert api.delete(f"{base}/1").status_code == 404


def test_notify_test_reports_a_channel_that_fails(yard: Platform, receiver: HttpReceiver) -> None:
    receiver.script.status, receiver.script.body = 410, b"channel_is_archived"
    api = yard.api()
    base = f"/api/v1/stacks/{STACK}/notify"
    api.post(base, json={"kind": "slack", "target": receiver.url("/services/T/B/x")})
    report = api.post(f"{base}/test").json()
    [outcome] = report["channels"]
    assert outcome["status"] == "FAILED"
    assert outcome["detail"] == "Slack refused the message: HTTP 410: channel_is_archived"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"kind": "slack", "target": "http://hooks.slack.com/services/T/B/x"}, "plain http"),
        (
            {"kind": "slack", "target": "https://h.example.com/x", "events": ["deploys"]},
            "'deploys'",
        ),
        ({"kind": "email", "target": "ops@example.com"}, "needs an SMTP server"),
        ({"kind": "fax", "target": "https://h.example.com/x"}, "'fax' is not a kind of channel"),
    ],
)
def test_bad_channels_are_refused_with_the_reason(
    yard: Platform, body: dict[str, Any], error: str
) -> None:
    answer = yard.api().post(f"/api/v1/stacks/{STACK}/notify", json=body)
    assert answer.status_code == 400
    assert error in answer.json()["error"]


def test_a_webhook_to_the_platforms_own_endpoints_is_refused(yard: Platform) -> None:
    """A deployer must not get the platform to POST to its own API or registry (the
    router's admin API is on unix sockets: tests/integration/test_dataplane.py)."""
    api = yard.api()
    for port in (yard.settings.api_port, yard.settings.registry_port):
        for host in ("127.0.0.1", "localhost", "[::1]"):
            target = f"http://{host}:{port}/stop"
            answer = api.post(
                f"/api/v1/stacks/{STACK}/notify", json={"kind": "webhook", "target": target}
            )
            assert answer.status_code == 400, target
            assert "one of the platform's own endpoints" in answer.json()["error"]
    smtp = {"host": "127.0.0.1", "port": yard.settings.registry_port, "security": "none"}
    answer = api.post(
        f"/api/v1/stacks/{STACK}/notify",
        json={"kind": "email", "target": "ops@example.com", "smtp": smtp},
    )
    assert answer.status_code == 400


def test_the_notify_routes_need_the_token(yard: Platform) -> None:
    anonymous = TestClient(create_app(ApiContext(yard.settings, TOKEN, {}, yard.services)))
    base = f"/api/v1/stacks/{STACK}/notify"
    assert anonymous.get(base).status_code == 401
    assert anonymous.post(base, json={"kind": "slack", "target": "x"}).status_code == 401
    assert anonymous.post(f"{base}/test").status_code == 401
    assert anonymous.delete(f"{base}/1").status_code == 401
    assert anonymous.get(f"{base}/deliveries").status_code == 401
    assert yard.api().get("/api/v1/stacks/nope/notify").status_code == 404
