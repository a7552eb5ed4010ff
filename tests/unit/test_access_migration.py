"""From the single-token data of earlier versions to people and tokens: existing stacks,
runs, remotes and webhooks keep working, and the old remote URL (the admin token as its
password) works until that token is revoked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text

from stackyard.api.app import ApiContext, create_app
from stackyard.engines.fake import FakeEngine
from stackyard.pipeline.services import build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.store.database import alembic_config, migrate, open_database, session_factory

OLD_TOKEN = "the-admin-token-an-older-stackyard-made"
SECRET = "a" * 64


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"stackyard:{token}".encode()).decode()}


def test_existing_data_keeps_working_after_the_migration(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, source="fake", registry="fake")
    database = open_database(settings.database_url)
    config = alembic_config(settings.database_url)
    with database.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")  # the schema before people existed
        connection.execute(
            text(
                "INSERT INTO stacks (name, repo, branch, context_dir, dockerfile, "
                "webhook_secret, poll_seconds, created_at, updated_at) VALUES ('hello', "
                "'https://example.invalid/hello.git', 'main', '.', 'Dockerfile', :secret, 0, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            ),
            {"secret": SECRET},
        )
    migrate(database)
    services = build_services(
        settings,
        session_factory(database),
        RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password"),
        engine=FakeEngine(),
        router=FakeRouter(),
    )
    client = TestClient(create_app(ApiContext(settings, OLD_TOKEN, {}, services)))
    try:
        old = {"Authorization": f"Bearer {OLD_TOKEN}"}
        assert client.get("/api/v1/stacks/hello", headers=old).json()["name"] == "hello"
        assert client.get("/api/v1/whoami", headers=old).json() == {
            "name": "admin",
            "role": "admin",
            "token_id": "bootstrap",
            "scope": "role",
            "stack": None,
            "grants": ["admin", "deploy", "push", "read"],
        }
        remote = "/git/hello.git/info/refs?service=git-receive-pack"
        assert client.get(remote, headers=basic(OLD_TOKEN)).status_code == 200
        body = json.dumps({"zen": "hi"}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        ping = client.post(
            "/api/v1/hooks/github/hello",
            content=body,
            headers={"X-Hub-Signature-256": signature, "X-GitHub-Event": "ping"},
        )
        assert ping.json() == {"message": "pong"}  # the webhook secret is the same

        # The team replaces the bootstrap token with named people, then revokes it.
        alice = client.post("/api/v1/users", json={"name": "alice", "role": "admin"}, headers=old)
        mine = {"Authorization": f"Bearer {alice.json()['token']}"}
        assert client.delete("/api/v1/tokens/bootstrap", headers=mine).status_code == 200
        refused = client.get(remote, headers=basic(OLD_TOKEN))
        assert refused.status_code == 401
        assert refused.text.startswith("stackyard: token revoked")
        assert client.get("/api/v1/stacks", headers=old).status_code == 401
        assert client.get("/api/v1/stacks", headers=mine).status_code == 200
    finally:
        services.close()
        database.dispose()
