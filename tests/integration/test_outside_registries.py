"""Outside registries against a real registry with token auth and our own token server.

``stackyard registries add`` checks the credentials (the bearer token flow), records the
registry with its password sealed, and never shows or logs the password; a registry that
refuses them is named with the HTTP status, and nothing is recorded. The registry client
copies an image into it by digest with a token, blobs first and the manifest last. A
stage whose target pulls from it gets its release copied there, with the same digest.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackyard.errors import NotFoundError, StackyardError
from stackyard.images.registry import RegistryClient

from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .cutting_proxy import CuttingProxy
from .gitrepo import GitRepo
from .registry_fixtures import LiveRegistry, PushedImages
from .registry_fixtures import live_registry as live_registry  # the fixtures
from .registry_fixtures import pushed_images as pushed_images
from .registry_fixtures import second_live_registry as second_live_registry
from .token_registry import TokenRegistry, token_registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    with token_registry(tmp_path_factory.mktemp("outside")) as registry:
        yield registry


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("yard") / "data")
    try:
        yield running
    finally:
        stop_platform(running)


def add(
    yard: RunningPlatform, name: str, url: str, username: str, password: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACKYARD, "registries", "add", name, "--url", url, "--username", username,
         "--password-stdin", "--json"],
        input=password + "\n", env=yard.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def listed(yard: RunningPlatform) -> list[dict[str, object]]:
    found: list[dict[str, object]] = json.loads(yard.cli("registries", "list", "--json").stdout)
    return found


def test_registries_add_checks_the_token_credentials_and_never_shows_the_password(
    yard: RunningPlatform, outside: TokenRegistry
) -> None:
    url = f"{outside.endpoint}/acme"
    refused = add(yard, "hub", url, outside.username, "wrong-password")
    assert refused.returncode == 2, refused.stderr  # the user's input, not an API failure
    assert "API failed" not in refused.stderr
    assert f"registry hub ({outside.endpoint})" in refused.stderr
    assert "HTTP 401" in refused.stderr
    assert "nothing was recorded" in refused.stderr
    assert listed(yard) == []
    refusals = outside.tokens.refused
    assert refusals >= 1  # the real token server said no

    added = add(yard, "hub", url, outside.username, outside.password)
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)
    assert (record["name"], record["endpoint"], record["namespace"]) == (
        "hub",
        outside.endpoint,
        "acme",
    )
    assert (record["username"], record["auth"]) == (outside.username, "bearer")
    assert outside.tokens.issued >= 1
    assert "password" not in record
    assert [r["name"] for r in listed(yard)] == ["hub"]

    again = add(yard, "hub", url, outside.username, outside.password)
    assert again.returncode == 2
    assert "registry hub exists" in again.stderr
    bad_url = add(yard, "other", "not a host/acme", "u", "p")
    assert bad_url.returncode == 2
    assert "is not a host[:port]" in bad_url.stderr

    # Never in clear: not in the state database, the audit log, or any log file.
    stored = b"".join(path.read_bytes() for path in yard.data_dir.glob("stackyard.db*"))
    assert outside.username.encode() in stored  # the reader sees what is stored
    assert outside.password.encode() not in stored
    assert outside.password not in yard.cli("audit", "--json").stdout
    for log in (yard.data_dir / "logs").rglob("*.log"):
        assert outside.password not in log.read_text(errors="replace"), log

    removed = yard.cli("registries", "remove", "hub", "--yes")
    assert "removed registry hub" in removed.stdout
    assert listed(yard) == []


def test_the_client_copies_an_image_into_a_token_registry_by_digest(
    live_registry: LiveRegistry, pushed_images: PushedImages, outside: TokenRegistry
) -> None:
    source = RegistryClient(
        live_registry.endpoint, username=live_registry.username, password=live_registry.password
    )
    target = RegistryClient(outside.endpoint, username=outside.username, password=outside.password)
    with source, target:
        digest = source.copy(
            pushed_images.repository,
            pushed_images.v2,
            to_repository="acme/app",
            to_reference="prod",
            target=target,
        )
        assert digest == pushed_images.v2
        assert target.resolve("acme/app", "prod") == pushed_images.v2
        assert target.auth_scheme == "bearer"
    log = outside.log_file.read_text(errors="replace")
    assert '"PUT /v2/acme/app/manifests/prod HTTP/1.1" 201' in log


def test_a_stack_builds_releases_and_deploys_through_its_outside_registry(
    yard: RunningPlatform, outside: TokenRegistry, tmp_path: Path
) -> None:
    assert add(yard, "acme", f"{outside.endpoint}/acme", outside.username, outside.password)
    repo = GitRepo.from_example("hello", tmp_path / "outward")
    made_unique(repo)
    missing = yard.cli("stacks", "create", "outward", "--repo", str(repo.path),
                       "--registry", "nope", check=False)  # fmt: skip
    assert missing.returncode == 2
    assert "no registry named 'nope' (registries: acme;" in missing.stderr
    created = yard.cli("stacks", "create", "outward", "--repo", str(repo.path),
                       "--registry", "acme", "--json")  # fmt: skip
    assert json.loads(created.stdout)["registry"] == "acme"

    digest = json.loads(yard.cli("build", "outward", "--json", timeout=300).stdout)["digest"]
    listing = json.loads(yard.cli("images", "outward", "--json").stdout)
    assert listing["repository"] == f"{outside.endpoint}/acme/outward"
    assert set(listing["images"][0]["tags"]) == {"latest", repo.head()}
    client = RegistryClient(outside.endpoint, username=outside.username, password=outside.password)
    with client:
        assert client.resolve("acme/outward", "latest") == digest
    platform_log = (yard.data_dir / "logs" / "registry.log").read_text(errors="replace")
    assert "/v2/outward/" not in platform_log  # nothing went to the platform's registry
    assert_out_of_another_stack_s_reach(yard, f"{outside.endpoint}/acme/outward:latest", tmp_path)

    uploads = outside.log_file.read_text(errors="replace").count("/v2/acme/outward/blobs/uploads/")
    released = json.loads(yard.cli("release", "outward", "--stage", "dev", "--json").stdout)
    assert released["digest"] == digest
    log = outside.log_file.read_text(errors="replace")
    assert log.count("/v2/acme/outward/blobs/uploads/") == uploads  # promotion moves no layer
    assert '"PUT /v2/acme/outward/manifests/dev HTTP/1.1" 201' in log

    # The engine pulls from the outside registry with the stack's login (a token):
    # drop the build's local copy of the image first, so the pull really happens.
    subprocess.run(["docker", "rmi", f"{outside.endpoint}/acme/outward:latest"],
                   capture_output=True, check=True, timeout=60)  # fmt: skip
    yard.cli("deploy", "outward", "--stage", "dev", "--json", timeout=300)
    pulled = outside.log_file.read_text(errors="replace")
    assert f'"GET /v2/acme/outward/manifests/{digest} HTTP/1.1" 200' in pulled
    assert_runs(yard, "outward", "dev", digest)

    # A target on the real engine, pulling from the token registry: check reaches both.
    yard.cli("targets", "add", "here", "--docker", "unix:///var/run/docker.sock",
             "--registry", "acme", "--region", "eu-west")  # fmt: skip
    checked = json.loads(yard.cli("targets", "check", "here", "--json").stdout)
    assert checked == {"target": "here", "ok": True, "engine": "ok", "registry": "ok",
                       "nodes": None}  # fmt: skip
    yard.cli("targets", "remove", "here", "--yes")

    in_use = yard.cli("registries", "remove", "acme", "--yes", check=False)
    assert in_use.returncode == 2
    assert "registry acme is used by stack(s) outward" in in_use.stderr
    moved = yard.cli("stacks", "update", "outward", "--registry", "local", check=False)
    assert moved.returncode == 2
    assert "its registry can only change before its first release" in moved.stderr
    yard.cli("stacks", "delete", "outward", "--yes")  # its manifests go, out there too
    with (
        RegistryClient(
            outside.endpoint, username=outside.username, password=outside.password
        ) as client,
        pytest.raises(NotFoundError),
    ):
        client.resolve("acme/outward", "dev")
    yard.cli("registries", "remove", "acme", "--yes")


def test_a_password_rotated_at_the_registry_is_updated_without_touching_the_stacks(
    yard: RunningPlatform, outside: TokenRegistry, tmp_path: Path
) -> None:
    """The registry's token was rotated: builds fail saying how to give the new one, and
    `registries update` (checked first) lets the stack on, with nothing deleted."""
    assert add(yard, "rotating", f"{outside.endpoint}/acme", outside.username, outside.password)
    repo = GitRepo.from_example("hello", tmp_path / "rotated")
    made_unique(repo)
    yard.cli("stacks", "create", "rotated", "--repo", str(repo.path), "--registry", "rotating")
    listed_stacks = yard.cli("stacks", "list").stdout
    assert re.search(r"rotated\s.*\sDockerfile\s+rotating\s", listed_stacks), listed_stacks
    users = outside.tokens.users
    try:
        users[outside.username] = "rotated-token"
        failed = yard.cli("build", "rotated", check=False, timeout=300)
        assert failed.returncode != 0
        assert f"refused the credentials of user '{outside.username}'" in failed.stderr
        log = (yard.data_dir / "logs" / "builds" / "rotated" / "1.log").read_text()
        assert "stackyard registries update rotating --password-stdin" in log, log

        def update(password: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*STACKYARD, "registries", "update", "rotating", "--password-stdin"],
                input=password + "\n", env=yard.env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip

        checked = yard.cli("registries", "check", "rotating", check=False)
        assert checked.returncode == 1
        assert "HTTP 401" in checked.stderr
        assert "stackyard registries update rotating --password-stdin" in checked.stderr
        doctor = json.loads(yard.cli("doctor", "--json", check=False).stdout)
        [found] = [c for c in doctor["checks"] if c["check"] == "registries"]
        assert found["verdict"] == "fail", found
        assert "rotating: " in found["summary"]

        wrong = update("not-it")
        assert wrong.returncode == 2, wrong.stderr
        assert "HTTP 401" in wrong.stderr
        assert "nothing was recorded" in wrong.stderr
        updated = update("rotated-token")
        assert updated.returncode == 0, updated.stderr
        assert "updated registry rotating" in updated.stdout
        assert json.loads(yard.cli("registries", "check", "rotating", "--json").stdout) == {
            "registry": "rotating",
            "ok": True,
            "problem": "",
        }
        built = json.loads(yard.cli("build", "rotated", "--json", timeout=300).stdout)
        assert built["status"] == "SUCCEEDED"
        stored = b"".join(path.read_bytes() for path in yard.data_dir.glob("stackyard.db*"))
        assert b"rotated-token" not in stored
        assert "rotated-token" not in yard.cli("audit", "--json").stdout
    finally:
        users[outside.username] = outside.password
        yard.cli("stacks", "delete", "rotated", "--yes")
        yard.cli("registries", "remove", "rotating", "--yes")


def assert_out_of_another_stack_s_reach(yard: RunningPlatform, image: str, tmp_path: Path) -> None:
    """A stack on the platform's own registry cannot read the image the platform's default
    build named in another stack's outside registry (the engine holds it locally)."""
    commands = [
        f"docker image inspect {image} > /dev/null || echo 'blocked: inspect'",
        f"docker save -o /tmp/x.tar {image} || echo 'blocked: save'",
        f"printf 'FROM {image}\\n' > D && docker build --network host -f D . "
        "|| echo 'blocked: from'",
    ]
    listing = "".join(f"      - {json.dumps(c)}\n" for c in commands)
    repo = GitRepo.from_example("hello", tmp_path / "peer")
    repo.write("build.yml", f"version: 0.2\nphases:\n  build:\n    commands:\n{listing}")
    repo.commit("reads another stack's image")
    yard.cli("stacks", "create", "peer", "--repo", str(repo.path))
    try:
        result = yard.cli("build", "peer", "--json", check=False, timeout=300)
        log = Path(json.loads(result.stdout)["log_path"]).read_text()
        for what in ("inspect", "save", "from"):
            assert f"blocked: {what}" in log, log
        assert "that is another stack's repository" in log, log
    finally:
        yard.cli("stacks", "delete", "peer", "--yes")


def test_a_copy_cut_half_way_tags_nothing_and_the_next_copy_finishes_it(
    live_registry: LiveRegistry,
    second_live_registry: LiveRegistry,
    pushed_images: PushedImages,
) -> None:
    host, port = second_live_registry.endpoint.rsplit(":", 1)

    def home() -> RegistryClient:
        return RegistryClient(
            live_registry.endpoint,
            username=live_registry.username,
            password=live_registry.password,
        )

    with home() as source:
        manifest = source.get_manifest(pushed_images.repository, pushed_images.v2)
    sizes = {d["digest"]: int(d["size"]) for d in manifest_descriptors(manifest.raw)}
    config, first_layer, *_ = manifest.blobs()
    # The network goes down half way through the first layer, after the config blob.
    proxy = CuttingProxy((host, int(port)), budget=sizes[config] + sizes[first_layer] // 2)

    def destination() -> RegistryClient:
        return RegistryClient(
            proxy.endpoint,
            username=second_live_registry.username,
            password=second_live_registry.password,
            retries=2,
            backoff=0.1,
        )

    try:
        with home() as source, destination() as target, pytest.raises(StackyardError):
            source.copy(pushed_images.repository, pushed_images.v2,
                        to_repository="cut/app", to_reference="prod", target=target)  # fmt: skip
        assert proxy.cut
        proxy.restore()
        with destination() as target:
            present = {digest: target.blob_exists("cut/app", digest) for digest in sizes}
            assert present[config], present  # what was sent before the cut stays
            assert not present[first_layer], present  # the cut blob never completed
            with pytest.raises(NotFoundError):  # no tag points at a half-copied image
                target.resolve("cut/app", "prod")
        with home() as source, destination() as target:
            digest = source.copy(pushed_images.repository, pushed_images.v2,
                                 to_repository="cut/app", to_reference="prod",
                                 target=target)  # fmt: skip
            assert digest == pushed_images.v2
            assert target.resolve("cut/app", "prod") == pushed_images.v2
            missing = [d for d, there in present.items() if not there]
            assert target.counts.blob_uploads == len(missing)  # only what was missing
            assert target.counts.manifest_puts == 1
    finally:
        proxy.stop()
    assert second_live_registry.skopeo_digest("cut/app", "prod") == pushed_images.v2


def made_unique(repo: GitRepo) -> None:
    """Commit a file into the image that no earlier run had: a new digest. The shared Docker
    engine (20.10) keeps each manifest it pulled in its content store, noted with the
    repository it came from, and a later pull of that digest from that repository asks the
    registry nothing. Every unchanged hello image has one digest, and a registry here has a
    random port, so a run whose outside registry got the port of an earlier run's saw no
    manifest request at all."""
    repo.write("www/run.txt", secrets.token_hex(16) + "\n")
    repo.commit("an image of this run's own")


def manifest_descriptors(raw: bytes) -> list[dict[str, object]]:
    document = json.loads(raw)
    return [document["config"], *document["layers"]]


def stages(target: str, health: str) -> str:
    """stackyard.yml: dev on ``local``, prod on ``target``."""
    check = f"    health: {{path: {health}}}\n"
    return f"stages:\n  - name: dev\n{check}  - name: prod\n    target: {target}\n{check}"


def add_target(
    yard: RunningPlatform, outside: TokenRegistry, name: str, namespace: str, region: str
) -> None:
    """A target ``name`` on the platform's own engine, pulling from ``namespace`` in
    ``outside`` (recorded as the registry ``name``)."""
    assert add(yard, name, f"{outside.endpoint}/{namespace}", outside.username, outside.password)
    yard.cli("targets", "add", name, "--docker", "unix:///var/run/docker.sock",
             "--registry", name, "--region", region)  # fmt: skip


def assert_runs(yard: RunningPlatform, stack: str, stage: str, digest: str) -> None:
    """``stackyard check``: the stage's tasks run ``digest``."""
    state = json.loads(yard.cli("check", stack, "--stage", stage, "--json").stdout)
    assert state["digest"] == digest, state
    assert state["tasks"], state
    assert all(task["digest"] == digest and task["match"] for task in state["tasks"]), state


REGIONAL_UPLOADS = "/v2/acme/regional/blobs/uploads/"


# A stage on a target whose registry is this outside one: its release is copied there and
# its tasks pull from there. The target's engine is another instance on the platform's own
# engine's socket here (separate engines per target: test_target_engines.py).
def test_a_stage_on_a_target_with_its_own_registry_runs_the_same_digest(
    yard: RunningPlatform, outside: TokenRegistry, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "regional")
    repo.write("stackyard.yml", stages("eu", "/healthz"))
    made_unique(repo)
    yard.cli("stacks", "create", "regional", "--repo", str(repo.path))

    # No target eu yet: the build names the stage and the line, and records no image.
    failed = yard.cli("build", "regional", "--json", timeout=300, check=False)
    assert failed.returncode != 0
    shown = yard.cli("builds", "regional", "--json").stdout
    assert "stackyard.yml:5:5: stages[1].target: stage 'prod' runs on target 'eu', which " in (
        shown
    )

    add_target(yard, outside, "eu", "acme", "eu-west")
    digest = json.loads(yard.cli("build", "regional", "--json", timeout=300).stdout)["digest"]
    yard.cli("release", "regional", "--stage", "dev", "--json")
    released = json.loads(yard.cli("release", "regional", "--stage", "prod", "--json").stdout)
    assert released["digest"] == digest
    log = Path(released["log_path"]).read_text(encoding="utf-8")
    assert f"target eu: copy {digest} to registry eu as prod" in log
    with RegistryClient(
        outside.endpoint, username=outside.username, password=outside.password
    ) as client:
        assert client.resolve("acme/regional", "prod") == digest
    uploads = outside.log_file.read_text(errors="replace").count(REGIONAL_UPLOADS)
    assert uploads >= 2  # the image's blobs really went there

    yard.cli("deploy", "regional", "--stage", "prod", "--json", timeout=300)
    # prod's task pulls from eu's registry: a GET of the manifest (a HEAD when the engine
    # holds it from another registry; none at all had it pulled this digest from this very
    # repository before, hence the image made unique for this run)
    pulled = outside.log_file.read_text(errors="replace")
    assert f' /v2/acme/regional/manifests/{digest} HTTP/1.1" 200' in pulled
    assert_runs(yard, "regional", "prod", digest)

    # Released again: every blob is there already, so none is sent.
    yard.cli("release", "regional", "--stage", "prod", "--json")
    assert outside.log_file.read_text(errors="replace").count(REGIONAL_UPLOADS) == uploads

    targets = json.loads(yard.cli("targets", "--json").stdout)
    assert [(t["name"], t["nodes"], t["stages"]) for t in targets] == [
        ("local", 1, ["regional/dev"]),
        ("eu", 1, ["regional/prod"]),
    ]
    in_use = yard.cli("targets", "remove", "eu", "--yes", check=False)
    assert in_use.returncode == 2
    assert "target eu is used by stage(s) regional/prod" in in_use.stderr
    deleted = json.loads(yard.cli("stacks", "delete", "regional", "--yes", "--json").stdout)
    assert deleted == {"deleted": "regional", "left": [], "removed_later": []}
    with (
        RegistryClient(
            outside.endpoint, username=outside.username, password=outside.password
        ) as client,
        pytest.raises(NotFoundError),
    ):
        client.resolve("acme/regional", "prod")  # its copy in eu's registry went with it
    # The engine's copy that prod's task pulled from there went too.
    names = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert f"{outside.endpoint}/acme/regional" not in names
    yard.cli("targets", "remove", "eu", "--yes")
    yard.cli("registries", "remove", "eu", "--yes")


# Retention on such a stage: the engine's images pulled from the target's registry go like
# the platform's own names (before, every digest prod ever ran stayed until the stack went).
def test_retention_removes_the_engine_s_old_images_pulled_from_a_target_registry(
    outside: TokenRegistry, tmp_path: Path
) -> None:
    yard = start_platform(tmp_path / "data", up_args=("--keep-releases", "1"))
    regional = f"{outside.endpoint}/kept/pruned"
    try:
        add_target(yard, outside, "kept", "kept", "eu-north")
        repo = GitRepo.from_example("hello", tmp_path / "pruned")
        repo.write("stackyard.yml", stages("kept", "/healthz"))
        yard.cli("stacks", "create", "pruned", "--repo", str(repo.path))
        digests = []
        for _ in (1, 2):
            made_unique(repo)
            built = json.loads(yard.cli("build", "pruned", "--json", timeout=300).stdout)
            digests.append(built["digest"])
            yard.cli("release", "pruned", "--stage", "dev")
            yard.cli("release", "pruned", "--stage", "prod", timeout=300)
            yard.cli("deploy", "pruned", "--stage", "prod", timeout=300)
        assert pulled_digests(regional) == set(digests)

        report = json.loads(yard.cli("prune", "--json", timeout=600).stdout)
        assert report["errors"] == []
        assert f"{regional}@{digests[0]}" in report["engine_references"]
        assert f"{regional}@{digests[0]}" in report["manifests"]  # its copy there went too
        assert pulled_digests(regional) == {digests[1]}  # what prod runs stays
        assert_runs(yard, "pruned", "prod", digests[1])
        yard.cli("stacks", "delete", "pruned", "--yes")
        assert pulled_digests(regional) == set()
    finally:
        yard.cli("stacks", "delete", "pruned", "--yes", check=False)
        yard.cli("targets", "remove", "kept", "--yes", check=False)
        yard.cli("registries", "remove", "kept", "--yes", check=False)
        stop_platform(yard)


def pulled_digests(name: str) -> set[str]:
    """The digests the engine holds under ``name``."""
    listing = subprocess.run(
        ["docker", "image", "ls", "--digests", "--format", "{{.Digest}}",
         "--filter", f"reference={name}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    return {d for d in listing if d.startswith("sha256:")}


# TinyStacks' release.yml, unchanged, for a stage whose target uses this outside registry:
# its regional block logs in there with `aws ecr get-login-password --region $STAGE_REGION`
# and pushes the stack's repository there itself, through the release's Docker API.
def test_the_tinystacks_release_pushes_a_stage_s_image_to_its_target_registry(
    yard: RunningPlatform, outside: TokenRegistry, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("tinystacks", tmp_path / "tiny")
    repo.write("stackyard.yml", stages("apac", "/ping"))
    repo.commit("prod runs on target apac")
    add_target(yard, outside, "apac", "asia", "ap-east")
    yard.cli("stacks", "create", "tiny", "--repo", str(repo.path))
    regional = f"{outside.endpoint}/asia/tiny"
    try:
        digest = json.loads(yard.cli("build", "tiny", "--json", timeout=300).stdout)["digest"]
        dev = json.loads(yard.cli("release", "tiny", "--stage", "dev", "--json").stdout)
        dev_log = Path(dev["log_path"]).read_text(encoding="utf-8")
        assert "dev runs in" not in dev_log  # local: the regional variables are empty

        prod = json.loads(
            yard.cli("release", "tiny", "--stage", "prod", "--json", timeout=300).stdout
        )
        assert (prod["source"], prod["digest"]) == ("release.yml", digest)
        log = Path(prod["log_path"]).read_text(encoding="utf-8")
        assert f"prod runs in ap-east: pushing to {outside.endpoint}" in log
        assert log.count("Login Succeeded") == 2  # $ECR_ENDPOINT, then $REGIONAL_ECR_ENDPOINT
        assert f"prod: digest: {digest}" in log  # the regional push itself: the same digest
        assert "refused" not in log
        for password in (outside.password, yard_password(yard)):
            assert password not in log
        with RegistryClient(
            outside.endpoint, username=outside.username, password=outside.password
        ) as client:
            assert client.resolve("asia/tiny", "prod") == digest

        yard.cli("deploy", "tiny", "--stage", "prod", "--json", timeout=300)
        assert_runs(yard, "tiny", "prod", digest)

        # A registry that refuses deletes keeps the copy, and `stacks delete` says so.
        outside.tokens.withheld.add("delete")
        deleted = yard.cli("stacks", "delete", "tiny", "--yes")
        assert "Deleted stack tiny." in deleted.stdout
        assert f"Left its copies in target apac's registry ({regional}): " in deleted.stdout
        assert "Remove the rest by hand" in deleted.stdout
        with RegistryClient(
            outside.endpoint, username=outside.username, password=outside.password
        ) as client:
            assert client.resolve("asia/tiny", "prod") == digest
    finally:
        outside.tokens.withheld.clear()
        yard.cli("stacks", "delete", "tiny", "--yes", check=False)
        yard.cli("targets", "remove", "apac", "--yes", check=False)
        yard.cli("registries", "remove", "apac", "--yes", check=False)
        names = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True, text=True, timeout=60,
        ).stdout.split()  # fmt: skip
        ours = [n for n in names if n.startswith(("builtimage:", f"{yard.registry}/tiny:",
                                                  f"{regional}:"))]  # fmt: skip
        if ours:
            subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, timeout=120)


def yard_password(yard: RunningPlatform) -> str:
    credentials = (yard.data_dir / "registry-credentials.json").read_text()
    password: str = json.loads(credentials)["password"]
    return password
