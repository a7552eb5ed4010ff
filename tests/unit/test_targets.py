"""Targets through the API: admin only, ``local`` built in, bad input named, and a registry
a target uses cannot be removed. A real app on a fresh store (fakes for the adapters)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackyard.store.models import OutsideRegistry
from tests.access_yard import AccessYard, access_yard

EU = {"name": "eu", "engine": "swarm", "endpoint": "unix:///run/docker-eu.sock",
      "registry": "local", "region": "eu-west"}  # fmt: skip


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[AccessYard]:
    with access_yard(tmp_path) as found:
        yield found


def post(yard: AccessYard, body: dict[str, str], who: str = "admin") -> tuple[int, dict[str, str]]:
    response = yard.client.post("/api/v1/targets", json=body, headers=yard.auth(who))
    return response.status_code, response.json()


def test_an_admin_adds_lists_and_removes_a_target(yard: AccessYard) -> None:
    status, added = post(yard, EU)
    assert status == 201, added
    assert (added["name"], added["engine"], added["registry"], added["region"]) == (
        "eu",
        "swarm",
        "local",
        "eu-west",
    )
    assert added["created_by"] == "alice"
    listing = yard.client.get("/api/v1/targets", headers=yard.auth("admin")).json()["targets"]
    assert [(t["name"], t["builtin"]) for t in listing] == [("local", True), ("eu", False)]
    assert listing[0]["engine"] == "docker"  # the platform's own engine
    removed = yard.client.delete("/api/v1/targets/eu", headers=yard.auth("admin"))
    assert removed.status_code == 200
    listing = yard.client.get("/api/v1/targets", headers=yard.auth("admin")).json()["targets"]
    assert [t["name"] for t in listing] == ["local"]


@pytest.mark.parametrize("who", ["deployer", "viewer", "deploy hello", "push hello"])
def test_only_admins_see_or_change_targets(yard: AccessYard, who: str) -> None:
    assert post(yard, EU, who)[0] == 403
    assert yard.client.get("/api/v1/targets", headers=yard.auth(who)).status_code == 403
    assert yard.client.get("/api/v1/targets/local", headers=yard.auth(who)).status_code == 403
    assert yard.client.delete("/api/v1/targets/eu", headers=yard.auth(who)).status_code == 403


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "local"}, "'local' is the built-in target"),
        ({"name": "EU"}, "target name 'EU' is not valid"),
        ({"endpoint": "/run/docker.sock"}, "is not an endpoint"),
        ({"region": "eu west"}, "region 'eu west' is not valid"),
        ({"registry": "ghcr"}, "target eu: no registry named 'ghcr'"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    yard: AccessYard, change: dict[str, str], message: str
) -> None:
    status, answer = post(yard, {**EU, **change})
    assert status == 400, answer
    assert message in answer["error"]
    listing = yard.client.get("/api/v1/targets", headers=yard.auth("admin")).json()["targets"]
    assert [t["name"] for t in listing] == ["local"]


def test_an_engine_kind_other_than_docker_or_swarm_is_refused(yard: AccessYard) -> None:
    assert post(yard, {**EU, "engine": "kubernetes"})[0] == 422


def test_twice_the_same_name_and_the_built_in_target_stay(yard: AccessYard) -> None:
    assert post(yard, EU)[0] == 201
    status, answer = post(yard, EU)
    assert (status, answer["error"]) == (400, "target eu exists")
    local = yard.client.delete("/api/v1/targets/local", headers=yard.auth("admin"))
    assert local.status_code == 400
    unknown = yard.client.delete("/api/v1/targets/us", headers=yard.auth("admin"))
    assert unknown.status_code == 404
    assert "no target named 'us' (targets: local, eu)" in unknown.json()["error"]


def test_a_registry_a_target_pulls_from_cannot_be_removed(yard: AccessYard) -> None:
    with yard.sessions.begin() as session:
        session.add(
            OutsideRegistry(
                name="ghcr",
                url="127.0.0.1:5001/acme",
                username="bot",
                password_sealed=yard.services.secrets.seal_platform("pw"),
                auth="basic",
            )
        )
    status, added = post(yard, {**EU, "registry": "ghcr"})
    assert (status, added["registry"]) == (201, "ghcr")
    refused = yard.client.delete("/api/v1/registries/ghcr", headers=yard.auth("admin"))
    assert refused.status_code == 400
    assert "registry ghcr is used by target(s) eu" in refused.json()["error"]


# The docker SDK asks the daemon its API version while it builds its client, and when no
# daemon answers it drops that client without closing its socket (docker-py's, not ours).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_check_reaches_the_engine_and_the_registry_and_names_what_is_wrong(
    yard: AccessYard, tmp_path: Path
) -> None:
    local = yard.client.get("/api/v1/targets/local/check", headers=yard.auth("admin")).json()
    assert local == {
        "target": "local",
        "ok": True,
        "engine": "ok",
        "registry": "ok",
        "nodes": None,
    }
    socket = tmp_path / "no-engine.sock"  # nothing listens there
    body = {**EU, "engine": "docker", "endpoint": f"unix://{socket}"}
    assert post(yard, body)[0] == 201
    found = yard.client.get("/api/v1/targets/eu/check", headers=yard.auth("admin")).json()
    assert found["ok"] is False
    assert found["engine"].startswith(f"docker engine at unix://{socket}: ")
    assert found["registry"] == "ok"
    assert (
        yard.client.get("/api/v1/targets/eu/check", headers=yard.auth("viewer")).status_code == 403
    )
    gc.collect()  # the SDK's dropped socket is reported here, inside this test
