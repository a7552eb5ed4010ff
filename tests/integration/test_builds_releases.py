"""Build once, store by digest, promote by retag: against the real engine, registry and git.

One platform serves the whole module; each test uses its own stack, so tests stay
independent while paying the start-up cost once.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    started = time.time() - 1
    running = start_platform(tmp_path_factory.mktemp("yard") / "data")
    try:
        yield running
    finally:
        stop_platform(running, images_since=started)


def create_stack(yard: RunningPlatform, name: str, repo: GitRepo, *extra: str) -> None:
    yard.cli("stacks", "create", name, "--repo", str(repo.path), *extra)


def build(yard: RunningPlatform, stack: str, *args: str, ok: bool = True) -> dict[str, Any]:
    result = yard.cli("build", stack, "--json", *args, check=ok, timeout=300)
    if not ok:
        assert result.returncode == 1, result.stderr
    record: dict[str, Any] = json.loads(result.stdout)
    record["_stderr"] = result.stderr
    return record


def release(yard: RunningPlatform, stack: str, stage: str) -> dict[str, Any]:
    return dict(json.loads(yard.cli("release", stack, "--stage", stage, "--json").stdout))


def credentials(yard: RunningPlatform) -> str:
    record = json.loads((yard.data_dir / "registry-credentials.json").read_text())
    return f"{record['username']}:{record['password']}"


def skopeo_digest(yard: RunningPlatform, stack: str, tag: str) -> str:
    """The digest as skopeo, a client Stackyard did not write, sees it."""
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--creds", credentials(yard),
         f"docker://{yard.registry}/{stack}:{tag}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return str(json.loads(result.stdout)["Digest"])


def blob_uploads(yard: RunningPlatform, stack: str) -> int:
    """Blob upload requests for ``stack`` in the registry's access log."""
    log = (yard.data_dir / "logs" / "registry.log").read_text(errors="replace")
    return len(re.findall(rf'"POST /v2/{re.escape(stack)}/blobs/uploads/ HTTP', log))


def manifest_puts(yard: RunningPlatform, stack: str) -> int:
    log = (yard.data_dir / "logs" / "registry.log").read_text(errors="replace")
    return len(re.findall(rf'"PUT /v2/{re.escape(stack)}/manifests/[^ ]+ HTTP', log))


def test_default_build_stores_one_image_under_latest_and_sha(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "hello")
    create_stack(yard, "hello", repo)
    record = build(yard, "hello")
    assert record["status"] == "SUCCEEDED", record
    assert record["commit_sha"] == repo.head()
    assert record["kind"] == "default"
    digest = record["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert skopeo_digest(yard, "hello", "latest") == digest
    assert skopeo_digest(yard, "hello", repo.head()) == digest
    listing = json.loads(yard.cli("images", "hello", "--json").stdout)
    assert listing["repository"] == f"{yard.registry}/hello"
    assert listing["images"] == [
        {
            "digest": digest,
            "tags": sorted([repo.head(), "latest"]),
            "size": listing["images"][0]["size"],
        }
    ]
    assert Path(record["log_path"]).read_text().count("Successfully built") == 1


def test_promotion_moves_no_layer_and_keeps_the_digest(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "promo")
    create_stack(yard, "promo", repo)
    digest = build(yard, "promo")["digest"]
    uploads_before, puts_before = blob_uploads(yard, "promo"), manifest_puts(yard, "promo")
    for number, stage in enumerate(("dev", "staging", "prod"), start=1):
        record = release(yard, "promo", stage)
        assert (record["stage"], record["number"], record["digest"]) == (stage, 1, digest)
        assert skopeo_digest(yard, "promo", stage) == digest
        assert manifest_puts(yard, "promo") == puts_before + number
    assert blob_uploads(yard, "promo") == uploads_before  # no layer moved
    second = release(yard, "promo", "dev")
    assert second["number"] == 2
    history = json.loads(yard.cli("releases", "promo", "--stage", "dev", "--json").stdout)
    assert [r["number"] for r in history] == [2, 1]
    assert history[0]["config"]["stage"]["name"] == "dev"
    listing = json.loads(yard.cli("images", "promo", "--json").stdout)
    assert len(listing["images"]) == 1
    assert set(listing["images"][0]["tags"]) == {"latest", repo.head(), "dev", "staging", "prod"}


def test_release_needs_the_previous_stage_and_a_known_stage(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "order")
    create_stack(yard, "order", repo)
    build(yard, "order")
    early = yard.cli("release", "order", "--stage", "staging", check=False)
    assert early.returncode == 2
    assert "staging promotes what dev runs, but dev has no release yet" in early.stderr
    assert "stackyard release order --stage dev" in early.stderr
    unknown = yard.cli("release", "order", "--stage", "qa", check=False)
    assert unknown.returncode == 1
    assert "no stage 'qa' (stages: dev, staging, prod)" in unknown.stderr
    missing = yard.cli("build", "nope", check=False)
    assert missing.returncode == 1
    assert "no stack named 'nope'" in missing.stderr
    assert "order" in missing.stderr


TINYSTACKS_BUILD = """\
version: 0.2
env:
  exported-variables:
    - BUILT_TAG
phases:
  pre_build:
    commands:
      - echo "building $STACK_NAME build $CODEBUILD_BUILD_NUMBER"
      - echo "registry user $REGISTRY_USERNAME password $REGISTRY_PASSWORD"
  build:
    commands:
      - docker build --network host -t "$ECR_IMAGE_URL:latest" .
      - docker tag "$ECR_IMAGE_URL:latest" "$ECR_IMAGE_URL:$(git rev-parse HEAD)"
      - export BUILT_TAG=$(git rev-parse HEAD)
  post_build:
    commands:
      - docker push "$ECR_IMAGE_URL:latest"
      - docker push "$IMAGE_URL:$COMMIT_SHA"
"""


def test_tinystacks_build_yml_pushes_with_a_logged_in_docker(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "tiny")
    repo.write("build.yml", TINYSTACKS_BUILD)
    sha = repo.commit("add a TinyStacks build.yml")
    create_stack(yard, "tiny", repo)
    record = build(yard, "tiny")
    assert record["status"] == "SUCCEEDED", record["_stderr"]
    assert record["kind"] == "buildspec"
    assert record["exported"] == {"BUILT_TAG": sha}
    assert skopeo_digest(yard, "tiny", sha) == record["digest"]
    assert skopeo_digest(yard, "tiny", "latest") == record["digest"]
    password = credentials(yard).split(":", 1)[1]
    log = Path(record["log_path"]).read_text()
    assert "building tiny build 1" in log
    assert "password ***" in log
    assert password not in log


def test_failing_build_tags_nothing_and_moves_no_release(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "broken")
    create_stack(yard, "broken", repo)
    good = build(yard, "broken")["digest"]
    release(yard, "broken", "dev")
    repo.write("Dockerfile", "FROM busybox:latest\nRUN echo 'compiling' && exit 3\n")
    bad_sha = repo.commit("a broken Dockerfile")
    failed = build(yard, "broken", ok=False)
    assert failed["status"] == "FAILED"
    assert "returned a non-zero code: 3" in failed["error"]
    assert "compiling" in Path(failed["log_path"]).read_text()
    assert skopeo_digest(yard, "broken", "latest") == good
    assert skopeo_digest(yard, "broken", "dev") == good
    tags = json.loads(yard.cli("images", "broken", "--json").stdout)["images"][0]["tags"]
    assert bad_sha not in tags
    assert len(json.loads(yard.cli("releases", "broken", "--json").stdout)) == 1


def test_failing_build_yml_restores_latest(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "halfway")
    create_stack(yard, "halfway", repo)
    good = build(yard, "halfway")["digest"]
    repo.write("www/index.html", "VERSION=v2\n")
    repo.write(
        "build.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        '      - docker build -t "$IMAGE_URL:latest" .\n'
        '      - docker push "$IMAGE_URL:latest"\n'
        '      - docker tag "$IMAGE_URL:latest" "$IMAGE_URL:$COMMIT_SHA"\n'
        '      - docker push "$IMAGE_URL:$COMMIT_SHA"\n'
        "      - echo 'tests failed' && exit 1\n",
    )
    repo.commit("pushes, then fails")
    failed = build(yard, "halfway", ok=False)
    assert failed["status"] == "FAILED"
    assert "build.yml FAILED in build (exit status 1)" in failed["error"]
    assert skopeo_digest(yard, "halfway", "latest") == good
    log = Path(failed["log_path"]).read_text()
    assert "restored latest" in log
    assert f"removed {repo.head()}, which the failed build pushed" in log
    listing = json.loads(yard.cli("images", "halfway", "--json").stdout)["images"]
    tags = {tag for image in listing for tag in image["tags"]}
    assert repo.head() not in tags
    assert [image["digest"] for image in listing] == [good]


RELEASE_YML = """\
version: 0.2
phases:
  build:
    commands:
      - echo "release $STAGE_NAME from $PREVIOUS_STAGE_NAME"
      - docker pull "$IMAGE_URL:$PREVIOUS_STAGE_NAME"
      - docker tag "$IMAGE_URL:$PREVIOUS_STAGE_NAME" "$IMAGE_URL:$STAGE_NAME"
      - docker push "$IMAGE_URL:$STAGE_NAME"
"""


def test_release_yml_runs_with_stage_names(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "relyml")
    repo.write("release.yml", RELEASE_YML)
    repo.commit("TinyStacks' release.yml")
    create_stack(yard, "relyml", repo)
    digest = build(yard, "relyml")["digest"]
    record = release(yard, "relyml", "dev")
    assert record["source"] == "release.yml"
    assert record["digest"] == digest == skopeo_digest(yard, "relyml", "dev")
    log = yard.cli("release", "relyml", "--stage", "staging", "--json").stdout
    staged = json.loads(log)
    assert "release staging from dev" in Path(staged["log_path"]).read_text()


def test_build_of_an_older_commit_and_bad_refs(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "history")
    first = repo.head()
    repo.set_version("v2")
    create_stack(yard, "history", repo)
    record = build(yard, "history", "--commit", first[:10])
    assert record["commit_sha"] == first
    unknown = build(yard, "history", "--commit", "deadbeef", ok=False)
    assert "deadbeef" in unknown["error"]
    yard.cli("stacks", "update", "history", "--branch", "no-such-branch")
    branch = build(yard, "history", ok=False)
    assert "branch 'no-such-branch' not found" in branch["error"]
    assert "branches: main" in branch["error"]
    yard.cli("stacks", "update", "history", "--repo", str(tmp_path / "gone"))
    gone = build(yard, "history", ok=False)
    assert str(tmp_path / "gone") in gone["error"]


def test_builds_of_one_stack_never_interleave(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "queue")
    create_stack(yard, "queue", repo)
    first = json.loads(yard.cli("build", "queue", "--detach", "--json").stdout)
    second = json.loads(yard.cli("build", "queue", "--detach", "--json").stdout)
    assert (first["number"], second["number"]) == (1, 2)
    done = json.loads(yard.cli("build", "queue", "--json", timeout=300).stdout)
    assert done["number"] == 3
    assert done["status"] == "SUCCEEDED"
    records = {b["number"]: b for b in json.loads(yard.cli("builds", "queue", "--json").stdout)}
    assert [records[n]["status"] for n in (1, 2, 3)] == ["SUCCEEDED"] * 3
    for earlier, later in ((1, 2), (2, 3)):
        assert records[earlier]["finished_at"] <= records[later]["started_at"]


def test_auto_dockerize_builds_a_static_site(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = GitRepo.from_example("static-site", tmp_path / "site")
    create_stack(yard, "site", repo)
    record = build(yard, "site")
    assert record["status"] == "SUCCEEDED"
    log = Path(record["log_path"]).read_text()
    assert "no Dockerfile: detected static" in log
    assert skopeo_digest(yard, "site", "latest") == record["digest"]


def engine_references(yard: RunningPlatform, stack: str) -> set[str]:
    """The stack's image references (repo@digest) the Docker engine holds."""
    listed = subprocess.run(
        ["docker", "images", "--digests", "--format", "{{.Repository}}@{{.Digest}}",
         f"{yard.registry}/{stack}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    return {ref for ref in listed if not ref.endswith("@<none>")}


def test_older_builds_leave_the_engine_but_stay_in_the_registry(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "prune")
    create_stack(yard, "prune", repo)
    repo.set_version("prune-1")
    first = build(yard, "prune")
    image = f"{yard.registry}/prune"
    # The same content tagged in another repository (another stack's identical build, or a
    # name the operator gave it) keeps the image from being "dangling" engine-wide: this
    # repository's old digest reference must go all the same.
    elsewhere = f"stackyard-test/prune-elsewhere:{first['digest'][7:19]}"
    subprocess.run(
        ["docker", "tag", f"{image}@{first['digest']}", elsewhere], check=True, timeout=60
    )
    try:
        repo.set_version("prune-2")
        second = build(yard, "prune")
        deadline = time.monotonic() + 30  # the prune runs a few seconds after the build
        while f"{image}@{first['digest']}" in engine_references(yard, "prune"):
            assert time.monotonic() < deadline, engine_references(yard, "prune")
            time.sleep(0.2)
    finally:
        subprocess.run(["docker", "rmi", elsewhere], capture_output=True, timeout=60)
    assert f"{image}@{second['digest']}" in engine_references(yard, "prune")  # the cache
    assert skopeo_digest(yard, "prune", first["commit_sha"]) == first["digest"]


def test_release_a_chosen_image_by_commit_digest_or_tag(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "chosen")
    create_stack(yard, "chosen", repo)
    first = repo.head()
    old = build(yard, "chosen")["digest"]
    repo.set_version("v2")
    new = build(yard, "chosen")["digest"]
    assert old != new

    by_commit = json.loads(
        yard.cli("release", "chosen", "--stage", "dev", "--commit", first[:7], "--json").stdout
    )
    assert (by_commit["digest"], by_commit["origin"], by_commit["forced"]) == (old, "chosen", False)
    assert skopeo_digest(yard, "chosen", "dev") == old
    assert skopeo_digest(yard, "chosen", "latest") == new

    refused = yard.cli("release", "chosen", "--stage", "prod", "--digest", old, check=False)
    assert refused.returncode == 2, refused.stderr
    assert f"image {old} was never released to staging, the stage before prod" in refused.stderr
    never = yard.cli("release", "chosen", "--stage", "dev", "--commit", "4fe8827", check=False)
    assert "no image for commit 4fe8827: no build of it succeeded" in never.stderr
    assert "hint: build it: stackyard build chosen --commit 4fe8827" in never.stderr
    absent = yard.cli("release", "chosen", "--stage", "dev", "--digest", "sha256:" + "0" * 64,
                      check=False)  # fmt: skip
    assert f"is not in {yard.registry}/chosen" in absent.stderr

    forced = yard.cli("release", "chosen", "--stage", "prod", "--tag", first, "--force")
    assert "(chosen, forced by " in forced.stdout
    assert "not deployed: prod runs its current release until `stackyard deploy chosen" in (
        forced.stdout
    )
    assert re.search(
        r"prod\s+local\s+- \(1 not deployed\)", yard.cli("stages", "list", "chosen").stdout
    )
    assert skopeo_digest(yard, "chosen", "prod") == old
    table = yard.cli("releases", "chosen").stdout
    assert re.search(r"prod\s+1\s+sha256:\S+\s+\S+\s+1\s+chosen, forced by \S+", table), table
    history = json.loads(yard.cli("releases", "chosen", "--json").stdout)
    assert [(r["stage"], r["origin"], r["forced"]) for r in history] == [
        ("prod", "chosen", True),
        ("dev", "chosen", False),
    ]

    # --deploy rolls the chosen release out at once, as the RFC's `./deploy.sh hash_2`.
    deployed = json.loads(
        yard.cli(
            "release", "chosen", "--stage", "dev", "--digest", new, "--deploy", "--json"
        ).stdout
    )
    assert (deployed["release"]["number"], deployed["deployment"]["status"]) == (2, "COMPLETED")
    check = json.loads(yard.cli("check", "chosen", "--stage", "dev", "--json").stdout)
    assert (check["release"], check["digest"], check["converged"]) == (2, new, True)
    assert [task["digest"] for task in check["tasks"]] == [new]
    stages = json.loads(yard.cli("stages", "list", "chosen", "--json").stdout)["stages"]
    assert [(s["stage"], s["release"], s["undeployed_release"]) for s in stages] == [
        ("dev", 2, None),
        ("staging", None, None),
        ("prod", None, 1),
    ]
