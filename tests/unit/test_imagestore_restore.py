"""Putting tags back after a failed build: the plan as plain data, then the executor."""

from __future__ import annotations

from stackyard.images.imagestore import (
    ImageStore,
    Removal,
    plan_removals,
    plan_restores,
)
from stackyard.registry_login import RegistryLogin

from .test_registry_client import FakeRegistry, client_for

GOOD, BAD, OTHER = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64
SHA = "c0ffee"


def test_restores_only_tags_that_existed_and_moved() -> None:
    current = {"latest": BAD, SHA: BAD, "dev": GOOD}
    previous = {"latest": GOOD}
    assert plan_restores(current, previous, ["latest", SHA]) == {"latest": GOOD}
    assert plan_restores({"latest": GOOD}, previous, ["latest", SHA]) == {}


def test_removes_the_new_sha_tag_once_latest_is_back() -> None:
    # Read AFTER the restore: latest is back on GOOD, so nothing that stays shares BAD.
    after = {"latest": GOOD, SHA: BAD, "dev": GOOD}
    assert plan_removals(after, {"latest": GOOD}, ["latest", SHA]) == [
        Removal(digest=BAD, tags=[SHA], kept_by=[])
    ]


def test_first_build_failing_removes_both_of_its_tags_at_once() -> None:
    after = {"latest": BAD, SHA: BAD}
    assert plan_removals(after, {}, ["latest", SHA]) == [
        Removal(digest=BAD, tags=["latest", SHA], kept_by=[])
    ]


def test_leaves_a_digest_that_a_kept_tag_shares() -> None:
    # The failed build re-pushed an image identical to what dev runs.
    after = {"latest": GOOD, SHA: OTHER, "dev": OTHER}
    assert plan_removals(after, {"latest": GOOD}, ["latest", SHA]) == [
        Removal(digest=OTHER, tags=[SHA], kept_by=["dev"])
    ]


def test_nothing_to_remove_when_the_build_pushed_nothing_new() -> None:
    assert plan_removals({"latest": GOOD}, {"latest": GOOD}, ["latest", SHA]) == []


def test_restore_tags_puts_latest_back_and_removes_the_sha_tag() -> None:
    fake = FakeRegistry()
    good = fake.push_image("web", "latest", [b"good layer"]).digest
    store = ImageStore(client_for(fake), RegistryLogin("127.0.0.1:5999", "user", "secret"))
    previous = store.tag_digests("web", ["latest", SHA])
    bad = fake.push_image("web", "latest", [b"bad layer"]).digest
    store.retag("web", bad, SHA)
    lines: list[str] = []

    store.restore_tags("web", previous, tags=["latest", SHA], log=lines.append)

    assert store.tag_digests("web", store.list_tags("web")) == {"latest": good}
    assert lines == [f"restored latest -> {good}", f"removed {SHA}, which the failed build pushed"]
