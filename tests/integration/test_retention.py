"""Retention on a real platform: 30 builds and releases of one stack, and a second stack
deleted. After `stackyard prune` the registry holds exactly the blobs the kept releases
need, the engine only their images, the old logs are gone, and a rollback to the oldest
kept release still deploys. A rollback to a release whose manifest retention deleted is
refused, though the engine holding its image would still start it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from stackyard.platform import registry_storage

from .conftest import RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

KEEP = 3
BUILDS = 30
STACKFILE = """\
stages:
  - name: dev
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0, stop_timeout: 2}
"""


def releases(yard: RunningPlatform, stack: str) -> dict[int, str]:
    found = json.loads(yard.cli("releases", stack, "--stage", "dev", "--json").stdout)
    return {r["number"]: r["digest"] for r in found}


def new_stack(yard: RunningPlatform, name: str, tmp_path: Path) -> GitRepo:
    repo = GitRepo.from_example("hello", tmp_path / name)
    repo.write("stackyard.yml", STACKFILE)
    repo.commit("one stage")
    yard.cli("stacks", "create", name, "--repo", str(repo.path))
    return repo


def build_and_release(yard: RunningPlatform, stack: str) -> None:
    yard.cli("build", stack, timeout=300)
    yard.cli("release", stack, "--stage", "dev")


def blobs_referenced(root: Path, digests: set[str]) -> set[str]:
    """The blobs (manifests included) that the manifests ``digests`` need."""
    needed = set()
    for digest in digests:
        needed.add(digest)
        hexa = digest.removeprefix("sha256:")
        document = json.loads((root / "blobs" / "sha256" / hexa[:2] / hexa / "data").read_bytes())
        needed.add(document["config"]["digest"])
        needed.update(layer["digest"] for layer in document["layers"])
    return needed


def blobs_on_disk(root: Path) -> set[str]:
    return {f"sha256:{path.parent.name}" for path in (root / "blobs").rglob("data")}


def engine_digests(yard: RunningPlatform, stack: str) -> set[str]:
    listing = subprocess.run(
        [
            "docker",
            "image",
            "ls",
            "--digests",
            "--format",
            "{{.Digest}}",
            "--filter",
            f"reference={yard.registry}/{stack}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return {d for d in listing if d.startswith("sha256:")}


def prune(yard: RunningPlatform, *options: str) -> dict[str, Any]:
    return dict(json.loads(yard.cli("prune", "--json", *options, timeout=600).stdout))


def test_retention_keeps_what_a_rollback_needs_and_removes_the_rest(tmp_path: Path) -> None:
    started = time.time() - 1
    yard = start_platform(tmp_path / "data", up_args=("--keep-releases", str(KEEP)))
    try:
        gone = new_stack(yard, "gone", tmp_path)
        build_and_release(yard, "gone")
        yard.cli("deploy", "gone", "--stage", "dev", timeout=300)
        repo = new_stack(yard, "keep", tmp_path)
        started = time.monotonic()
        for number in range(1, BUILDS + 1):
            repo.set_version(str(number))
            build_and_release(yard, "keep")
        building = time.monotonic() - started
        yard.cli("deploy", "keep", "--stage", "dev", timeout=300)
        yard.cli("stacks", "delete", "gone", "--yes")
        del gone
        numbers = releases(yard, "keep")
        assert sorted(numbers) == list(range(1, BUILDS + 1))
        assert len(set(numbers.values())) == BUILDS  # one image per build
        kept = {numbers[n] for n in range(BUILDS - KEEP + 1, BUILDS + 1)}

        plan = prune(yard, "--dry-run")
        assert set(plan["kept"]["keep"]) == kept
        assert len(plan["manifests"]) == BUILDS - KEEP
        report = prune(yard)
        assert report["errors"] == []
        assert report["garbage_collected"] is True
        assert report["after"]["registry"] < report["before"]["registry"]

        root = registry_storage.storage_root(yard.data_dir)
        assert registry_storage.repositories(root) == ["gone", "keep"]
        assert registry_storage.manifest_digests(root, "keep") == kept
        assert registry_storage.manifest_digests(root, "gone") == set()
        # Disk use is back to what the kept releases need: not one blob more.
        assert blobs_on_disk(root) == blobs_referenced(root, kept)
        assert engine_digests(yard, "keep") <= kept
        assert engine_digests(yard, "gone") == set()

        logs = yard.data_dir / "logs"
        assert not (logs / "builds" / "gone").exists()
        assert sorted(p.name for p in (logs / "builds" / "keep").iterdir()) == [
            f"{n}.log" for n in range(BUILDS - KEEP + 1, BUILDS + 1)
        ]
        assert "this log is gone" in yard.cli("logs", "keep", "--build", "1").stdout

        oldest = BUILDS - KEEP + 1
        rolled = json.loads(
            yard.cli(
                "rollback", "keep", "--stage", "dev", "--to", str(oldest), "--json", timeout=300
            ).stdout
        )
        assert rolled["digest"] == numbers[oldest]
        check = json.loads(yard.cli("check", "keep", "--stage", "dev", "--json").stdout)
        assert check["converged"]
        assert check["digest"] == numbers[oldest]
        print(f"\n{BUILDS} builds and releases took {building:.0f} s")
    finally:
        stop_platform(yard, images_since=started)


def test_a_rollback_to_a_release_retention_deleted_is_refused(tmp_path: Path) -> None:
    """Docker 20.10 pulls a digest it pulled once from its content store even after the
    registry deleted the manifest: the platform asks the registry (a HEAD) before it
    deploys, so the rollback is refused and the stage keeps serving what it serves."""
    started = time.time() - 1
    yard = start_platform(tmp_path / "data", up_args=("--keep-releases", "1"))
    stack = "pruned"
    names: list[str] = []  # this test's names of images on the shared engine
    try:
        repo = new_stack(yard, stack, tmp_path)
        commits = []
        for number in (1, 2):
            commits.append(repo.set_version(f"{number}-{secrets.token_hex(4)}"))
            build_and_release(yard, stack)
            yard.cli("deploy", stack, "--stage", "dev", timeout=300)
            if number == 1:
                # The engine keeps release 1's image (another name holds it; retention
                # removes only the platform's names), as an engine retention does not
                # reach would. Held now, while dev runs it: the prune that follows build 2
                # removes the platform's name of it from the engine.
                names.append(f"stackyard-test-hold/{stack}:{secrets.token_hex(4)}")
                with docker.APIClient(timeout=120) as api:
                    api.tag(f"{yard.registry}/{stack}@{releases(yard, stack)[1]}", names[0])
        numbers = releases(yard, stack)
        report = prune(yard)
        assert report["errors"] == []
        assert f"{stack}@{numbers[1]}" in report["manifests"]
        # The engine would still start it: its pull (with the platform's login) succeeds
        # though the registry deleted the manifest.
        login = json.loads((yard.data_dir / "registry-credentials.json").read_text())
        names.append(f"{yard.registry}/{stack}@{numbers[1]}")
        with docker.APIClient(timeout=120) as api:
            api.pull(
                f"{yard.registry}/{stack}",
                tag=numbers[1],
                auth_config={"username": login["username"], "password": login["password"]},
            )

        refused = yard.cli("rollback", stack, "--stage", "dev", "--to", "1", check=False)
        assert refused.returncode == 1, refused.stdout
        said = " ".join(refused.stderr.split())
        assert (
            f"release 1 of {stack}/dev cannot be deployed: its image {numbers[1]} is no longer "
            f"in registry {yard.registry} ({stack}): retention keeps only the images of the "
            "last 1 release(s) per stage (stackyard up --keep-releases)"
        ) in said
        assert f"rebuild commit {commits[0][:12]}" in said
        assert sorted(releases(yard, stack)) == [1, 2]  # nothing recorded
        check = json.loads(yard.cli("check", stack, "--stage", "dev", "--json").stdout)
        assert (check["release"], check["digest"], check["converged"]) == (2, numbers[2], True)
    finally:
        stop_platform(yard, images_since=started)
        for name in names:  # the hold, and what the pull named (a registry now gone)
            subprocess.run(["docker", "rmi", name], capture_output=True, timeout=60)
