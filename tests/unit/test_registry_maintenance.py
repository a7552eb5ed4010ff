"""The registry's maintenance pieces, with no process: the read-only and garbage collection
plans, the reading of its files, and which failed pushes are worth trying again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackyard.images.push_retry import push_may_succeed_later
from stackyard.platform import registry_storage
from stackyard.platform.components import plan_registry, plan_registry_gc
from stackyard.settings import Settings


def test_the_read_only_registry_serves_the_same_storage_with_writes_refused(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    config_path = settings.run_dir / "registry.yml"
    normal = json.loads(plan_registry(settings, binary="reg").files[config_path])
    read_only = json.loads(
        plan_registry(settings, binary="reg", mode="read-only").files[config_path]
    )
    assert "maintenance" not in normal["storage"]
    assert read_only["storage"]["maintenance"] == {"readonly": {"enabled": True}}
    assert read_only["storage"]["filesystem"] == normal["storage"]["filesystem"]
    assert read_only["http"]["addr"] == normal["http"]["addr"]


def test_garbage_collection_reads_a_config_of_its_own_without_the_read_only_switch(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    spec = plan_registry_gc(settings, binary="/usr/bin/docker-registry")
    gc_config = settings.run_dir / "registry-gc.yml"
    assert spec.argv == ("/usr/bin/docker-registry", "garbage-collect", str(gc_config))
    storage = json.loads(spec.files[gc_config])["storage"]
    assert storage["filesystem"]["rootdirectory"] == str(tmp_path / "registry" / "data")
    assert "maintenance" not in storage


def test_without_the_binary_garbage_collection_runs_in_the_official_image(tmp_path: Path) -> None:
    spec = plan_registry_gc(Settings(data_dir=tmp_path), binary=None)
    assert spec.argv[:3] == ("docker", "run", "--rm")
    assert spec.argv[-3:-1] == ("registry:2", "garbage-collect")
    assert spec.container_name is None


def link(root: Path, relative: str, digest: str = "sha256:" + "a" * 64) -> None:
    path = root / relative / "link"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)


def test_manifests_are_read_from_revision_links_and_a_deleted_one_has_none(
    tmp_path: Path,
) -> None:
    root = tmp_path / "v2"
    a, b = "a" * 64, "b" * 64
    link(root, f"repositories/team/shop/_manifests/revisions/sha256/{a}")
    (root / f"repositories/team/shop/_manifests/revisions/sha256/{b}").mkdir(parents=True)
    link(root, "repositories/team/shop/_manifests/tags/latest/current")
    link(root, f"repositories/team/shop/_layers/sha256/{a}")
    link(root, f"repositories/web/_manifests/revisions/sha256/{b}")
    link(root, "repositories/web/_uploads/u1/startedat")
    assert registry_storage.repositories(root) == ["team/shop", "web"]
    assert registry_storage.manifest_digests(root, "team/shop") == {f"sha256:{a}"}
    metadata = [p.as_posix() for p in registry_storage.metadata_files(root)]
    assert not any("_uploads" in p for p in metadata)
    assert f"repositories/web/_manifests/revisions/sha256/{b}/link" in metadata


def test_blob_bytes_add_up_the_data_files(tmp_path: Path) -> None:
    root = tmp_path / "v2"
    for name, size in (("aa/aa11", 10), ("bb/bb22", 5)):
        blob = root / "blobs" / "sha256" / name / "data"
        blob.parent.mkdir(parents=True)
        blob.write_bytes(b"x" * size)
    assert registry_storage.blob_bytes(root) == 15
    assert registry_storage.blob_bytes(tmp_path / "none") == 0


@pytest.mark.parametrize(
    ("message", "later"),
    [
        (
            "docker push r/app:latest failed: error parsing HTTP 405 response body: invalid "
            "character 'M' looking for beginning of value: \"Method not allowed\\n\"",
            True,
        ),
        (
            "Get http://127.0.0.1:5000/v2/: dial tcp 127.0.0.1:5000: connect: connection refused",
            True,
        ),
        ("received unexpected HTTP status: 503 Service Unavailable", True),
        (
            "docker push r/app:latest failed: errors:\nmanifest blob unknown: blob unknown to "
            "registry\n",
            True,
        ),
        ("unauthorized: authentication required", False),
        ("denied: requested access to the resource is denied", False),
        ("An image does not exist locally with the tag: r/app", False),
    ],
)
def test_a_push_is_tried_again_only_when_the_registry_may_take_it_later(
    message: str, later: bool
) -> None:
    assert push_may_succeed_later(message) is later
