"""The build proxy's decisions, as plain data: what a build of ``shop`` may ask the engine."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from stackyard.buildspec.isolation import BuildIsolation
from stackyard.images.dockerproxy.rules import (
    Answer,
    ApiRequest,
    BuildLimits,
    BuildScope,
    Forward,
    Refuse,
    StageRepository,
    api_path,
    decide,
    judge,
    local_name,
    names_shown,
    ownership,
    pull_auth,
    pull_request,
    registry_auth_header,
    visible,
    without_registry,
)
from stackyard.registry_login import RegistryLogin

REGISTRY = "127.0.0.1:5000"
LOGIN = RegistryLogin(REGISTRY, "stackyard", "registry-password")
LIMITS = BuildLimits(cpus=1.5, memory=512 * 1024**2, pids=128, cpu_shares=128)
SCOPE = BuildScope("shop", REGISTRY, LOGIN, LIMITS, cgroup_parent="/docker/abc")


def ask(method: str, path: str, body: bytes = b"", **query: Any) -> Any:
    values = {k: v if isinstance(v, list) else [v] for k, v in query.items()}
    return decide(ApiRequest(method, path, values, body), SCOPE)


def refused(decision: object, *words: str) -> str:
    assert isinstance(decision, Refuse), decision
    assert decision.message.startswith("Stackyard's build proxy")
    for word in words:
        assert word in decision.message
    return decision.message


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("POST", "/containers/create", ["containers", "docker run"]),
        ("POST", "/containers/abc/start", ["containers"]),
        ("GET", "/containers/json", ["containers"]),
        ("POST", "/containers/victim/exec", ["containers"]),
        ("POST", "/exec/123/start", ["exec"]),
        ("POST", "/volumes/create", ["volumes"]),
        ("POST", "/networks/create", ["networks"]),
        ("POST", "/swarm/init", ["swarm"]),
        ("POST", "/services/create", ["docker service create"]),
        ("GET", "/nodes", ["swarm nodes"]),
        ("POST", "/plugins/pull", ["plugins"]),
        ("POST", "/session", ["BuildKit", "h2c"]),
        ("POST", "/grpc", ["BuildKit's control API"]),
        ("POST", "/images/load", ["docker load"]),
        ("POST", "/images/prune", ["pruning"]),
        ("POST", "/build/prune", ["pruning"]),
        ("POST", "/commit", ["committing"]),
        ("GET", "/events", ["events"]),
        ("GET", "/system/df", ["system"]),
    ],
)
def test_everything_but_images_is_refused(method: str, path: str, words: list[str]) -> None:
    refused(ask(method, path), *words)


def test_reading_the_engine_s_version_and_ping_is_allowed() -> None:
    for method, path in [("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", "/version")]:
        assert isinstance(ask(method, path), Forward)


def test_paths_that_climb_or_hide_are_not_paths() -> None:
    assert api_path("/v1.41/images/json") == "/images/json"
    assert api_path("/images/127.0.0.1:5000/shop/push") == "/images/127.0.0.1:5000/shop/push"
    assert api_path("/images/../containers/create") is None
    assert api_path("/v1.41//containers/create") is None
    assert api_path("/images/%2e%2e/containers/create") is None
    assert api_path("/images/x%00/json") is None


def test_a_build_is_held_to_the_build_s_limits_and_labelled() -> None:
    decision = ask("POST", "/build", t=["shop-built"], memory="9999999999", networkmode="host")
    assert isinstance(decision, Forward)
    query = decision.query
    assert query["memory"] == query["memswap"] == [str(512 * 1024**2)]
    assert query["cpushares"] == ["128"]
    assert (query["cpuperiod"], query["cpuquota"]) == (["100000"], ["150000"])
    assert query["cgroupparent"] == ["/docker/abc"]
    assert "labels" not in query  # the legacy builder would make a label one more step
    assert decision.writes == ("shop-built",)
    assert decision.records == ("shop-built:latest",)
    assert decision.build


def test_names_in_the_stack_s_repository_need_no_record() -> None:
    decision = ask("POST", "/build", t=[f"{REGISTRY}/shop:latest", "docker.io/library/x"])
    assert isinstance(decision, Forward)
    assert decision.records == ("x:latest",)
    assert local_name("busybox") == "busybox:latest"
    assert local_name("docker.io/library/python:3.11-slim") == "python:3.11-slim"
    assert local_name("ghcr.io/me/app:v1") == "ghcr.io/me/app:v1"
    assert local_name("sha256:" + "a" * 64) is None


def test_a_smaller_memory_a_build_asks_for_stays() -> None:
    decision = ask("POST", "/build", memory=str(64 * 1024**2))
    assert isinstance(decision, Forward)
    assert decision.query["memory"] == [str(64 * 1024**2)]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"remote": "http://127.0.0.1:2019/config/"}, ["from a URL"]),
        ({"version": "2"}, ["BuildKit", "session (none)"]),
        ({"session": "abc"}, ["BuildKit", "not opened by this build"]),
        ({"cgroupparent": "/"}, ["--cgroup-parent"]),
        ({"networkmode": "container:victim"}, ["--network container:victim"]),
        ({"networkmode": "shared-net"}, ["--network shared-net"]),
        ({"securityopt": "seccomp=unconfined"}, ["unknown option", "securityopt"]),
    ],
)
def test_build_options_that_reach_beyond_the_build_are_refused(
    query: dict[str, str], words: list[str]
) -> None:
    refused(ask("POST", "/build", **query), *words)


def test_empty_options_the_cli_always_sends_are_not_refusals() -> None:
    decision = ask("POST", "/build", remote="", cgroupparent="", session="", networkmode="")
    assert isinstance(decision, Forward)


def test_a_push_to_the_stack_s_repository_carries_the_platform_s_login() -> None:
    decision = ask("POST", f"/images/{REGISTRY}/shop/push", tag="latest")
    assert isinstance(decision, Forward)
    assert decision.auth == LOGIN


def test_a_push_to_another_stack_s_repository_is_refused() -> None:
    message = refused(ask("POST", f"/images/{REGISTRY}/victim/push", tag="latest"))
    assert "another stack's repository" in message
    assert f"{REGISTRY}/shop ($IMAGE_URL)" in message


def test_a_push_elsewhere_is_refused_on_the_platform_and_allowed_locally() -> None:
    refused(ask("POST", "/images/ghcr.io/me/app/push", tag="1"), "pushes only to its own")
    local = BuildScope("local", None, push_elsewhere=True)
    decision = decide(ApiRequest("POST", "/images/ghcr.io/me/app/push", {"tag": ["1"]}), local)
    assert isinstance(decision, Forward)
    assert decision.keep_auth
    assert decision.auth is None


def test_pulls_of_own_images_get_the_login_others_are_refused_and_elsewhere_passes() -> None:
    own = ask("POST", "/images/create", fromImage=f"{REGISTRY}/shop", tag="latest")
    assert isinstance(own, Forward)
    assert own.auth == LOGIN
    refused(ask("POST", "/images/create", fromImage=f"{REGISTRY}/victim", tag="latest"))
    base = ask("POST", "/images/create", fromImage="python", tag="3.11-slim")
    assert isinstance(base, Forward)
    assert base.keep_auth
    assert base.auth is None
    refused(ask("POST", "/images/create", fromSrc="http://127.0.0.1/x.tar"), "docker import")


def test_docker_login_to_the_platform_registry_is_answered_by_the_proxy() -> None:
    body = json.dumps({"username": "x", "password": "y", "serveraddress": REGISTRY}).encode()
    assert ask("POST", "/auth", body) == Answer(
        200, {"Status": "Login Succeeded", "IdentityToken": ""}
    )
    elsewhere = json.dumps({"serveraddress": "ghcr.io"}).encode()
    assert isinstance(ask("POST", "/auth", elsewhere), Forward)
    refused(ask("POST", "/auth", b"not json"), "not valid JSON")


def test_tagging_reads_the_source_and_writes_the_target() -> None:
    decision = ask("POST", "/images/shop-built/tag", repo=f"{REGISTRY}/shop", tag="v1")
    assert isinstance(decision, Forward)
    assert decision.reads == ("shop-built",)
    assert decision.writes == (f"{REGISTRY}/shop:v1",)
    assert decision.records == ()
    local = ask("POST", "/images/shop-built/tag", repo="shop-copy", tag="")
    assert local.records == ("shop-copy:latest",)
    # The docker CLI 28 sends the name normalised; a refusal names it as it was typed.
    normalised = ask("POST", "/images/evil/tag", repo="docker.io/library/busybox", tag="latest")
    assert normalised.writes == ("busybox:latest",)
    assert normalised.records == ("busybox:latest",)


def test_inspect_history_save_and_delete_name_the_image_they_touch() -> None:
    assert ask("GET", "/images/busybox:latest/json").reads == ("busybox:latest",)
    assert ask("GET", "/images/busybox/history").reads == ("busybox",)
    assert ask("GET", "/images/get", names=["a", "b"]).reads == ("a", "b")
    assert ask("DELETE", "/images/shop-built").writes == ("shop-built",)
    assert ask("GET", "/images/json").filter_listing


# -- judging what the engine has --------------------------------------------------------------


NAMES = {"shop-built:latest": "shop", "victim-built:latest": "victim"}


def image(*refs: str) -> dict[str, Any]:
    return {"RepoTags": list(refs), "RepoDigests": [], "Config": {"Labels": {}}}


def test_whose_image_it_is() -> None:
    assert ownership(image(f"{REGISTRY}/shop:latest"), SCOPE, NAMES) == "own"
    assert ownership(image("shop-built:latest"), SCOPE, NAMES) == "own"
    assert ownership(image(f"{REGISTRY}/victim:latest"), SCOPE, NAMES) == "foreign"
    assert ownership(image("victim-built:latest"), SCOPE, NAMES) == "foreign"
    assert ownership(image("busybox:latest"), SCOPE, NAMES) == "shared"
    digests = {"RepoTags": [], "RepoDigests": [f"{REGISTRY}/victim@sha256:{'a' * 64}"]}
    assert ownership(digests, SCOPE, NAMES) == "foreign"  # a task's image, pulled by digest


def test_a_build_may_read_shared_and_own_images_but_not_another_stack_s() -> None:
    assert judge("busybox:latest", image("busybox:latest"), SCOPE, "read", NAMES) is None
    assert judge("shop-built", image("shop-built:latest"), SCOPE, "read", NAMES) is None
    victim = image("victim-built:latest")
    for name in ("victim-built", "sha256:" + "b" * 64):
        refused(judge(name, victim, SCOPE, "read", NAMES), "holds that image for another stack")
    refused(judge(f"{REGISTRY}/victim:latest", None, SCOPE, "read", NAMES), "another stack's")


def test_a_build_may_not_replace_a_base_image_or_another_stack_s() -> None:
    message = refused(judge("busybox:latest", image("busybox:latest"), SCOPE, "write", NAMES))
    assert "not made by a build of shop" in message
    refused(judge("victim-built", image("victim-built:latest"), SCOPE, "write", NAMES))
    refused(
        judge(f"{REGISTRY}/victim:latest", None, SCOPE, "write", NAMES),
        "another stack's repository",
    )


def test_a_build_may_write_new_names_its_own_and_its_repository() -> None:
    assert judge("brand-new:1", None, SCOPE, "write", NAMES) is None
    assert judge("shop-built", image("shop-built:latest"), SCOPE, "write", NAMES) is None
    assert judge(f"{REGISTRY}/shop:latest", image("busybox:latest"), SCOPE, "write", NAMES) is None


def test_one_rule_for_every_image_its_names_then_who_built_it() -> None:
    nameless = {"Id": "sha256:" + "9" * 64, "RepoTags": [], "RepoDigests": []}
    assert ownership(nameless, SCOPE, NAMES) == "nameless"  # an intermediate, a moved tag
    assert ownership(nameless, SCOPE, NAMES, {nameless["Id"]}) == "own"  # this build made it
    retagged = image("python:3.11-slim", f"{REGISTRY}/victim:base", "victim-built:latest")
    assert ownership(retagged, SCOPE, NAMES) == "shared"  # a base image, whoever tagged it
    mixed = image("busybox:latest", f"{REGISTRY}/shop:base")
    assert ownership(mixed, SCOPE, NAMES) == "own"
    pushed = {"RepoTags": [], "RepoDigests": [f"{REGISTRY}/victim@sha256:{'a' * 64}"]}
    assert ownership(pushed, SCOPE, NAMES) == "foreign"  # its tag moved on, its digest stays


def test_another_stack_s_nameless_image_cannot_be_read_tagged_saved_or_listed() -> None:
    nameless = {"Id": "sha256:" + "9" * 64, "RepoTags": [], "RepoDigests": []}
    for name in (nameless["Id"], "999999999999"):  # docker tag, save, inspect, history
        refused(judge(name, nameless, SCOPE, "read", NAMES), "has no name", "did not make it")
    refused(judge(nameless["Id"], nameless, SCOPE, "write", NAMES), "remove")  # docker rmi
    listed = {**nameless, "RepoTags": ["<none>:<none>"], "RepoDigests": ["<none>@<none>"]}
    assert visible([nameless, listed], SCOPE, NAMES) == []
    # `IMAGE=$(docker build -q .); docker tag $IMAGE $IMAGE_URL:v1`: the build's own.
    built = {nameless["Id"]}
    assert judge("999999999999", nameless, SCOPE, "read", NAMES, built) is None
    assert judge(nameless["Id"], nameless, SCOPE, "write", NAMES, built) is None
    assert visible([nameless], SCOPE, NAMES, built) == [nameless]


def test_a_base_image_another_stack_tagged_stays_usable() -> None:
    retagged = image("python:3.11-slim", f"{REGISTRY}/victim:base")
    for name in ("python:3.11-slim", "sha256:" + "7" * 64):
        assert judge(name, retagged, SCOPE, "read", NAMES) is None
    assert visible([retagged], SCOPE, NAMES) == [image("python:3.11-slim")]
    refused(judge(f"{REGISTRY}/victim:base", retagged, SCOPE, "read", NAMES), "another stack's")
    refused(judge("python:3.11-slim", retagged, SCOPE, "write", NAMES), "not made by a build")


def test_a_base_image_the_stack_also_tagged_stays_the_base_image_s() -> None:
    """Once busybox bears a name of the stack's too, the image is the stack's to read, but
    busybox's own name is still not the stack's to move or remove, nor is the image."""
    mixed = image("busybox:latest", f"{REGISTRY}/shop:base")
    assert judge("busybox:latest", mixed, SCOPE, "read", NAMES) is None
    refused(judge("busybox:latest", mixed, SCOPE, "write", NAMES), "not made by a build of shop")
    refused(judge("sha256:" + "8" * 64, mixed, SCOPE, "write", NAMES), "not every name")
    assert judge(f"{REGISTRY}/shop:base", mixed, SCOPE, "write", NAMES) is None
    own = image(f"{REGISTRY}/shop:v1", "shop-built:latest")
    assert judge("sha256:" + "8" * 64, own, SCOPE, "write", NAMES) is None


def test_docker_images_hides_other_stacks_images() -> None:
    listing = [
        {"RepoTags": ["busybox:latest"]},
        {"RepoTags": [f"{REGISTRY}/shop:latest"]},
        {"RepoTags": [f"{REGISTRY}/victim:latest"]},
        {"RepoTags": ["victim-built:latest"]},
    ]
    shown = [entry["RepoTags"][0] for entry in visible(listing, SCOPE, NAMES)]
    assert shown == ["busybox:latest", f"{REGISTRY}/shop:latest"]


def test_the_login_header_and_the_build_s_registry_config() -> None:
    header = registry_auth_header(LOGIN)
    decoded = json.loads(base64.urlsafe_b64decode(header))
    assert decoded == {
        "username": "stackyard",
        "password": "registry-password",
        "serveraddress": REGISTRY,
    }
    configs = {REGISTRY: {"username": "x"}, "ghcr.io": {"username": "me"}}
    encoded = base64.urlsafe_b64encode(json.dumps(configs).encode()).decode()
    kept = json.loads(base64.urlsafe_b64decode(without_registry(encoded, REGISTRY)))
    assert kept == {"ghcr.io": {"username": "me"}}
    assert without_registry("%%%not-base64", REGISTRY) == ""


OUTSIDE = "127.0.0.1:5999"
OUTSIDE_LOGIN = RegistryLogin(OUTSIDE, "robot", "outside-password")
OUTSIDE_SCOPE = BuildScope(
    "shop", OUTSIDE, OUTSIDE_LOGIN, LIMITS, path="team/shop", platform_registry=REGISTRY
)


def ask_outside(method: str, path: str, **query: str) -> Any:
    values = {k: [v] for k, v in query.items()}
    return decide(ApiRequest(method, path, values), OUTSIDE_SCOPE)


def test_a_stack_on_an_outside_registry_pushes_there_with_its_login() -> None:
    assert OUTSIDE_SCOPE.repository == f"{OUTSIDE}/team/shop"
    decision = ask_outside("POST", f"/images/{OUTSIDE}/team/shop/push", tag="latest")
    assert isinstance(decision, Forward)
    assert decision.auth == OUTSIDE_LOGIN
    pull = ask_outside("POST", "/images/create", fromImage=f"{OUTSIDE}/team/shop", tag="1")
    assert isinstance(pull, Forward)
    assert pull.auth == OUTSIDE_LOGIN


def test_a_stack_on_an_outside_registry_may_not_use_other_repositories_there_or_ours() -> None:
    for name in (f"{OUTSIDE}/team/victim", f"{OUTSIDE}/shop", f"{REGISTRY}/shop"):
        message = refused(ask_outside("POST", f"/images/{name}/push", tag="latest"))
        assert "another stack's repository" in message, name
        assert f"{OUTSIDE}/team/shop ($IMAGE_URL)" in message
        refused(ask_outside("POST", "/images/create", fromImage=name, tag="latest"))
    configs = {REGISTRY: {"username": "x"}, OUTSIDE: {"username": "y"}, "ghcr.io": {}}
    encoded = base64.urlsafe_b64encode(json.dumps(configs).encode()).decode()
    kept = without_registry(encoded, *OUTSIDE_SCOPE.registries)
    assert json.loads(base64.urlsafe_b64decode(kept)) == {"ghcr.io": {}}


def test_a_build_s_scope_follows_the_stack_s_image_url() -> None:
    isolation = BuildIsolation(None, limits=LIMITS)
    outside = isolation.scope(
        "shop", OUTSIDE_LOGIN, image_url=f"{OUTSIDE}/team/shop", platform_registry=REGISTRY
    )
    assert (outside.registry, outside.path, outside.platform_registry) == (
        OUTSIDE,
        "team/shop",
        REGISTRY,
    )
    own = isolation.scope("shop", LOGIN, image_url=f"{REGISTRY}/shop", platform_registry=REGISTRY)
    assert (own.repository, own.platform_registry) == (f"{REGISTRY}/shop", None)


def test_names_in_the_platform_s_outside_registries_are_other_stacks() -> None:
    """Another stack pushes to an outside registry: the platform's default build names its
    image there, a deployment pulls it by digest. Those names are no base image's."""
    spaces = (OUTSIDE, "ghcr.io/acme")
    scope = BuildIsolation(None, limits=LIMITS, spaces=lambda: spaces).scope(
        "shop", LOGIN, image_url=f"{REGISTRY}/shop", platform_registry=REGISTRY
    )
    assert scope.spaces == spaces
    for name in (f"{OUTSIDE}/team/victim:3f2a", "ghcr.io/acme/victim:latest"):
        assert ownership(image(name), scope, NAMES) == "foreign"
        refused(judge(name, image(name), scope, "read", NAMES), "another stack's repository")
        refused(decide(ApiRequest("POST", "/images/create", {"fromImage": [name]}), scope))
    pulled = {"RepoTags": [], "RepoDigests": [f"ghcr.io/acme/victim@sha256:{'e' * 64}"]}
    refused(judge("sha256:" + "e" * 64, pulled, scope, "read", NAMES), "for another stack")
    tool = image("ghcr.io/someone/tool:1")  # outside the platform's namespace: a base image
    assert judge("ghcr.io/someone/tool:1", tool, scope, "read", NAMES) is None
    assert judge("ghcr.io/acme-tools/x:1", None, scope, "read", NAMES) is None
    assert ownership(image(f"{REGISTRY}/shop:v1", f"{OUTSIDE}/x:1"), scope, NAMES) == "own"


# -- a release whose stage's target pulls from another registry -------------------------------

EU = "127.0.0.1:5998"
EU_LOGIN = RegistryLogin(EU, "eu-robot", "eu-password")
RELEASE_SCOPE = BuildScope(
    "shop", REGISTRY, LOGIN, LIMITS, stage=StageRepository(EU, "acme/shop", EU_LOGIN)
)


def ask_release(method: str, path: str, body: bytes = b"", **query: str) -> Any:
    values = {k: [v] for k, v in query.items()}
    return decide(ApiRequest(method, path, values, body), RELEASE_SCOPE)


def test_a_release_pushes_to_the_stack_s_repository_in_its_target_registry_with_its_login() -> None:
    regional = ask_release("POST", f"/images/{EU}/acme/shop/push", tag="prod")
    assert isinstance(regional, Forward)
    assert regional.auth == EU_LOGIN
    home = ask_release("POST", f"/images/{REGISTRY}/shop/push", tag="prod")
    assert isinstance(home, Forward)
    assert home.auth == LOGIN
    tagged = ask_release(
        "POST", f"/images/{REGISTRY}/shop:dev/tag", repo=f"{EU}/acme/shop", tag="prod"
    )
    assert isinstance(tagged, Forward)
    assert tagged.records == ()  # the stack's own repository there: no record needed
    assert (
        judge(f"{EU}/acme/shop:prod", image("busybox:latest"), RELEASE_SCOPE, "write", NAMES)
        is None
    )
    login = json.dumps({"username": "AWS", "password": "stand-in", "serveraddress": EU}).encode()
    assert ask_release("POST", "/auth", login) == Answer(
        200, {"Status": "Login Succeeded", "IdentityToken": ""}
    )


def test_a_release_may_not_push_to_another_stack_s_repository_in_the_target_registry() -> None:
    for name in (f"{EU}/acme/victim", f"{EU}/shop", f"{EU}/acme/shop/more"):
        message = refused(ask_release("POST", f"/images/{name}/push", tag="prod"))
        assert "another stack's repository" in message, name
        assert f"{EU}/acme/shop ($REGIONAL_ECR_IMAGE_URL)" in message
        refused(ask_release("POST", "/images/create", fromImage=name, tag="prod"))
        refused(judge(f"{name}:prod", None, RELEASE_SCOPE, "write", NAMES), "another stack's")
    assert EU in RELEASE_SCOPE.registries  # a docker build's FROM never gets its login
    spaced = replace(RELEASE_SCOPE, spaces=(EU, REGISTRY))  # the target registry is known
    regional = decide(ApiRequest("POST", f"/images/{EU}/acme/shop/push", {"tag": ["p"]}), spaced)
    assert isinstance(regional, Forward)
    assert regional.auth == EU_LOGIN


def test_a_build_may_not_push_to_the_target_registry_at_all() -> None:
    message = refused(ask("POST", f"/images/{EU}/acme/shop/push", tag="prod"))
    assert f"a build of shop pushes only to its own repository {REGISTRY}/shop" in message
    elsewhere = ask("POST", "/auth", json.dumps({"serveraddress": EU}).encode())
    assert isinstance(elsewhere, Forward)  # not answered: the engine asks the registry
    assert elsewhere.auth is None


# -- BuildKit (DOCKER_BUILDKIT=1) ---------------------------------------------------------------

SESSION = "mlgj9nhmz0mf8d2j8wkme91zi"


def ask_buildkit(
    opened: tuple[str, ...] = (SESSION,), scope: BuildScope = SCOPE, **query: Any
) -> Any:
    values = {"version": "2", "session": SESSION, "remote": "client-session", **query}
    request = ApiRequest("POST", "/build", {k: [v] for k, v in values.items()})
    return decide(request, scope, frozenset(opened))


def test_a_buildkit_session_is_relayed_and_remembered() -> None:
    request = ApiRequest("POST", "/session", upgrade="h2c", session=SESSION)
    decision = decide(request, SCOPE)
    assert isinstance(decision, Forward)
    assert decision.session == SESSION
    refused(decide(ApiRequest("POST", "/session", upgrade="h2c", session="../x"), SCOPE), "id")
    refused(decide(ApiRequest("POST", "/session", session=SESSION), SCOPE), "h2c")


def test_a_buildkit_build_keeps_the_legacy_rules_and_gets_its_own_cache_namespace() -> None:
    args = json.dumps({"A": "1", "BUILDKIT_CACHE_MOUNT_NS": "victim"})
    decision = ask_buildkit(t="shop-built", networkmode="host", buildid="b1", buildargs=args)
    assert isinstance(decision, Forward)
    assert decision.buildkit
    query = decision.query
    assert json.loads(query["buildargs"][0]) == {
        "A": "1",
        "BUILDKIT_CACHE_MOUNT_NS": "stackyard/shop",
    }
    assert (query["session"], query["remote"], query["networkmode"]) == (
        [SESSION],
        ["client-session"],
        ["host"],
    )
    assert query["memory"] == [str(512 * 1024**2)]
    assert "cgroupparent" not in query  # BuildKit ignores it; the budget holds its steps
    assert decision.writes == ("shop-built",)
    assert decision.records == ("shop-built:latest",)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (
            {
                "outputs": json.dumps(
                    [{"Type": "image", "Attrs": {"name": f"{REGISTRY}/victim", "push": "true"}}]
                )
            },
            ["type=image"],
        ),
        (
            {"outputs": json.dumps([{"Type": "registry", "Attrs": {"ref": f"{REGISTRY}/shop"}}])},
            ["type=registry"],
        ),
        (
            {"outputs": json.dumps([{"Type": "local", "Attrs": {"dest": "/"}}])},
            ["type=local with dest"],
        ),
        (
            {"outputs": json.dumps([{"Type": "moby", "Attrs": {"name": "busybox:latest"}}])},
            ["type=moby"],
        ),
        ({"outputs": "not json"}, ["not valid JSON"]),
        ({"networkmode": "container:victim"}, ["--network container:victim"]),
        ({"remote": "upload-request"}, ["from 'upload-request'"]),
        ({"remote": "http://127.0.0.1:2019/config/"}, ["from 'http"]),
        ({"cgroupparent": "/"}, ["--cgroup-parent"]),
        ({"securityopt": "insecure"}, ["unknown option", "securityopt"]),
        ({"entitlements": "security.insecure"}, ["unknown option", "entitlements"]),
        ({"buildargs": "[1]"}, ["build-arg"]),
        ({"buildargs": json.dumps({"BUILDKIT_SYNTAX": "victim"})}, ["build-arg BUILDKIT_SYNTAX"]),
    ],
)
def test_buildkit_builds_that_reach_beyond_the_build_are_refused(
    query: dict[str, str], words: list[str]
) -> None:
    refused(ask_buildkit(**query), *words)


def test_buildkit_outputs_back_to_the_client_are_allowed() -> None:
    for output in ("local", "tar", "cacheonly"):
        decision = ask_buildkit(outputs=json.dumps([{"Type": output, "Attrs": {}}]))
        assert isinstance(decision, Forward), output


def test_a_buildkit_build_needs_a_session_of_its_own_socket_and_a_budget() -> None:
    refused(ask_buildkit(opened=()), "not opened by this build")
    refused(ask_buildkit(opened=("another-build-s-session",)), "not opened by this build")
    nowhere = BuildScope("shop", REGISTRY, LOGIN, LIMITS, cgroup_parent=None)
    refused(ask_buildkit(scope=nowhere), "cgroupfs", "DOCKER_BUILDKIT=0")
    refused(
        decide(ApiRequest("POST", "/session", upgrade="h2c", session=SESSION), nowhere), "cgroupfs"
    )


def test_a_build_cancels_only_its_own_buildkit_builds() -> None:
    cancel = ApiRequest("POST", "/build/cancel", {"id": ["b1"]})
    assert isinstance(decide(cancel, SCOPE, frozenset({"b1"})), Forward)
    refused(decide(cancel, SCOPE, frozenset({"b2"})), "did not start")


def test_a_foreign_tag_on_a_buildkit_build_is_judged_as_a_legacy_one() -> None:
    decision = ask_buildkit(t=f"{REGISTRY}/victim:latest")
    assert isinstance(decision, Forward)
    assert judge(f"{REGISTRY}/victim:latest", None, SCOPE, "write", {}) is not None


def test_a_build_never_keeps_its_intermediate_containers() -> None:
    """A failed legacy build's step container would stay on the shared engine."""
    for asked in ({}, {"rm": "0", "forcerm": "0"}, {"rm": "false"}):
        decision = ask("POST", "/build", **asked)
        assert isinstance(decision, Forward)
        assert (decision.query["rm"], decision.query["forcerm"]) == (["1"], ["1"])


def test_a_build_s_pull_is_the_proxy_s_so_the_engine_builds_from_what_was_judged() -> None:
    plain = ask("POST", "/build")
    assert isinstance(plain, Forward)
    assert not plain.pull_first
    for value in ("1", "true", "True"):
        pulled = ask("POST", "/build", pull=value)
        assert isinstance(pulled, Forward)
        assert pulled.pull_first
        assert "pull" not in pulled.query  # the engine does not pull again
    assert not ask("POST", "/build", pull="0").pull_first


def test_a_base_image_is_pulled_as_the_builder_pulls_it() -> None:
    digest = "sha256:" + "a" * 64
    assert pull_request("busybox") == ("busybox", "latest")
    assert pull_request("busybox:1.36") == ("busybox", "1.36")
    assert pull_request(f"ghcr.io/o/tool:2@{digest}") == ("ghcr.io/o/tool", digest)
    assert pull_request("127.0.0.1:5001/bases/py") == ("127.0.0.1:5001/bases/py", "latest")
    assert pull_request("abcdef123456") == ("abcdef123456", "latest")  # as the engine does
    assert pull_request(digest) is None  # an image id
    assert pull_request("a" * 64) is None
    assert pull_request("Busybox") is None


def encoded(configs: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(configs).encode()).decode()


def decoded(header: str | None) -> Any:
    assert header is not None
    return json.loads(base64.urlsafe_b64decode(header))


def test_a_base_image_s_pull_uses_the_build_s_own_login_for_that_registry() -> None:
    configs = encoded(
        {
            "127.0.0.1:5001": {"username": "exact"},
            "https://ghcr.io/v2/": {"username": "legacy-key"},
            "https://index.docker.io/v1/": {"username": "hub"},
            "docker.io": {"username": "not-the-hub-key"},
        }
    )
    assert decoded(pull_auth(configs, "127.0.0.1:5001/bases/py", SCOPE)) == {"username": "exact"}
    assert decoded(pull_auth(configs, "ghcr.io/o/tool", SCOPE)) == {"username": "legacy-key"}
    assert decoded(pull_auth(configs, "busybox", SCOPE)) == {"username": "hub"}
    assert decoded(pull_auth(configs, "docker.io/library/busybox", SCOPE))["username"] == "hub"
    assert pull_auth(configs, "quay.io/o/x", SCOPE) is None  # no login: pulled anonymously
    assert pull_auth("", "ghcr.io/o/tool", SCOPE) is None
    assert pull_auth("%%%not-base64", "ghcr.io/o/tool", SCOPE) is None
    # The stack's own repository: the stack's login, as for docker pull; never another's.
    assert decoded(pull_auth("", f"{REGISTRY}/shop:base", SCOPE))["password"] == LOGIN.password
    leaked = encoded({REGISTRY: {"username": "x"}})
    assert pull_auth(without_registry(leaked, *SCOPE.registries), f"{REGISTRY}/v", SCOPE) is None


def test_an_image_s_inspect_and_history_show_no_other_stack_s_names() -> None:
    """A base image another stack also tagged: the build sees its other names only."""
    names = {"victim-built:latest": "victim", "shop-built:latest": "shop"}
    tags = ["busybox:latest", f"{REGISTRY}/victim:base", "victim-built:latest",
            f"{REGISTRY}/shop:base", "shop-built:latest"]  # fmt: skip
    digests = [f"{REGISTRY}/victim@sha256:{'a' * 64}", f"busybox@sha256:{'b' * 64}"]
    inspect = {"Id": "sha256:1", "RepoTags": tags, "RepoDigests": digests, "Size": 1}
    shown = names_shown(inspect, "inspect", SCOPE, names)
    kept = ["busybox:latest", f"{REGISTRY}/shop:base", "shop-built:latest"]
    assert shown == {**inspect, "RepoTags": kept, "RepoDigests": [digests[1]]}
    history = [{"Id": "sha256:1", "Tags": tags}, {"Id": "<missing>", "Tags": None}]
    assert names_shown(history, "history", SCOPE, names) == [
        {"Id": "sha256:1", "Tags": kept},
        {"Id": "<missing>", "Tags": None},
    ]
    for path, how in (("/images/busybox/json", "inspect"), ("/images/busybox/history", "history")):
        decision = ask("GET", path)
        assert isinstance(decision, Forward)
        assert (decision.reads, decision.filter_names) == (("busybox",), how)
