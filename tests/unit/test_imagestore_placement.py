"""A stack with an outside registry: every ImageStore call follows it there, under its
namespace and with its login; other stacks stay in the platform's registry."""

from __future__ import annotations

import json
from pathlib import Path

from stackyard.images.imagestore import ImageStore, Placement
from stackyard.images.registry_base import Registry
from stackyard.images.registry_fake import FakeRegistry
from stackyard.registry_login import RegistryLogin

LOCAL = RegistryLogin("127.0.0.1:5999", "stackyard", "local-pw")
OUTSIDE = Placement("acme", None, "acme", RegistryLogin("127.0.0.1:6001", "bot", "outside-pw"))


def store() -> tuple[ImageStore, FakeRegistry, FakeRegistry, list[Placement]]:
    local, outside = FakeRegistry(LOCAL.registry), FakeRegistry(OUTSIDE.endpoint)
    connected: list[Placement] = []

    def connect(placement: Placement) -> Registry:
        connected.append(placement)
        return outside

    images = ImageStore(
        local,
        LOCAL,
        placement=lambda stack: OUTSIDE if stack == "out" else None,
        connect=connect,
    )
    return images, local, outside, connected


def test_an_outside_stack_is_tagged_resolved_and_listed_there() -> None:
    images, local, outside, connected = store()
    digest = outside.push_image("acme/out", "latest", [b"layer"])
    assert images.digest("out", "latest") == digest
    assert images.retag("out", digest, "dev") == digest
    assert outside.tags[("acme/out", "dev")] == digest
    assert set(images.list_tags("out")) == {"dev", "latest"}
    assert images.image_url("out") == "127.0.0.1:6001/acme/out"
    assert (images.endpoint_of("out"), images.login("out")) == ("127.0.0.1:6001", OUTSIDE.login)
    assert not any(repository == "out" for repository, _ in local.tags)
    assert connected == [OUTSIDE]  # one client per registry, made once


def test_other_stacks_stay_in_the_platform_registry() -> None:
    images, local, outside, connected = store()
    digest = local.push_image("home", "latest", [b"layer"])
    assert images.retag("home", digest, "dev") == digest
    assert images.image_url("home") == "127.0.0.1:5999/home"
    assert images.login("home") == LOCAL
    assert connected == []
    assert outside.tags == {}


def test_a_spec_run_is_logged_in_to_both_registries(tmp_path: Path) -> None:
    images, _, _, _ = store()
    config = json.loads((images.docker_config(tmp_path / "d", "out") / "config.json").read_text())
    assert set(config["auths"]) == {"127.0.0.1:5999", "127.0.0.1:6001"}
    home = json.loads((images.docker_config(tmp_path / "h", "home") / "config.json").read_text())
    assert set(home["auths"]) == {"127.0.0.1:5999"}
