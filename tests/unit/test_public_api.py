"""`up --public-api`: the name it asks for, the URLs people are given, and the route that
publishes the API (against the fake router)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stackyard.cli.shared import platform_settings
from stackyard.cli.triggers import remote_url
from stackyard.errors import ComponentError, RetryableError, UsageError
from stackyard.platform.public_api import ROUTE_NAME, publish_api, refresh_router, republish_api
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from tests.recording_runs import recording_api

TOKEN = "admin-token-for-tests"


def settings(tmp_path: Path, public_api: str | None, domain: str | None = "apps.test") -> Settings:
    return platform_settings(
        tmp_path, None, None, None, domain=domain, public_api=public_api, https_port=8443
    )


def test_one_label_is_a_name_under_the_domain_and_a_full_name_is_kept(tmp_path: Path) -> None:
    assert settings(tmp_path, "stackyard").public_api == "stackyard.apps.test"
    assert settings(tmp_path, "Ops.Example.com.").public_api == "ops.example.com"
    assert settings(tmp_path, None).public_api is None


def test_public_api_needs_a_domain_and_a_host_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--public-api stackyard needs --domain") as found:
        settings(tmp_path, "stackyard", domain=None)
    assert "--domain D" in (found.value.hint or "")
    with pytest.raises(UsageError, match="'bad name' is not a host name"):
        settings(tmp_path, "bad name")


def test_the_published_url_is_https_on_the_name_and_links_point_there(tmp_path: Path) -> None:
    published = settings(tmp_path, "stackyard")
    assert published.public_api_url == "https://stackyard.apps.test:8443"
    assert published.published_url == published.console_url == published.public_api_url
    assert replace(published, https_port=443).published_url == "https://stackyard.apps.test"
    # An explicit --public-url (a proxy of one's own) wins; without either, loopback only.
    proxy = replace(published, public_url="https://ops.example.com/")
    assert proxy.published_url == "https://ops.example.com"
    loopback = settings(tmp_path, None)
    assert (loopback.published_url, loopback.console_url) == (None, loopback.api_url)
    token = "sy_push_x"
    assert (
        remote_url(published.console_url, token, "shop")
        == f"https://stackyard:{token}@stackyard.apps.test:8443/git/shop.git"
    )


def test_the_route_goes_to_the_api_s_loopback_port_and_goes_away_when_not_asked(
    tmp_path: Path,
) -> None:
    router = FakeRouter()
    published = replace(settings(tmp_path, "stackyard"), api_port=7001)
    publish_api(published, router)
    assert router.routes() == [ROUTE_NAME]
    route, upstreams = router.served[ROUTE_NAME]
    assert (route.host, route.tls, upstreams) == ("stackyard.apps.test", "acme", ["127.0.0.1:7001"])

    publish_api(replace(published, public_api=None), router)
    assert router.routes() == []


class RefusingRouter(FakeRouter):
    """A fake router whose refresh fails as its other calls can (``fail_next``)."""

    def refresh(self) -> None:
        self._enter("refresh")


def test_refreshing_the_router_and_republishing_the_api_warn_instead_of_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    router = RefusingRouter()
    router.fail_next(ComponentError("Caddy's admin socket refused"))
    refresh_router(router)
    router.fail_next(RetryableError("Caddy did not answer"))
    republish_api(settings(tmp_path, "stackyard"), router)
    assert router.routes() == []  # nothing published, and nothing raised
    warned = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert warned == [
        ("WARNING", "updating the router's config: Caddy's admin socket refused"),
        ("WARNING", "publishing the API on stackyard.apps.test: Caddy did not answer"),
    ]
    republish_api(settings(tmp_path, "stackyard"), router)  # it answers again
    assert router.routes() == [ROUTE_NAME]


def test_webhook_urls_and_status_give_the_published_url(tmp_path: Path) -> None:
    stacks = {"shop": "https://github.com/acme/shop.git"}
    published = {"public_api": "stackyard.apps.test", "https_port": 8443}
    with recording_api(tmp_path, TOKEN, stacks, **published) as api:
        client = TestClient(api.app)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        hooks = client.get("/api/v1/stacks/shop/webhook", headers=auth).json()
        status = client.get("/api/v1/status", headers=auth).json()
    base = "https://stackyard.apps.test:8443/api/v1/hooks"
    assert (hooks["github_url"], hooks["gitlab_url"]) == (
        f"{base}/github/shop",
        f"{base}/gitlab/shop",
    )
    assert status["public_url"] == "https://stackyard.apps.test:8443"
