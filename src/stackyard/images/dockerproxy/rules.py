"""What a build may ask of the Docker engine: pure decisions over method, path and query.

A build may build (the legacy builder, and BuildKit through a session it opened on the same
socket), tag, push to its own stack's repository, pull, and
inspect and list images; a release may also push to the stack's repository in its stage's
target registry (:class:`StageRepository`), with that registry's login. It may not run,
create or exec into containers, mount, touch volumes, networks, the swarm or plugins, load
images, or read or replace another stack's images. :func:`decide` answers one request of
a build with a :class:`Forward` (what to send on, rewritten), a :class:`Refuse` (the
message the build sees) or an :class:`Answer` (the proxy answers itself). Requests that
name images the build reads or writes carry those names; :func:`judge` then decides from
the engine's record of each image and from the proxy's record of which stack's build
named which local image (:data:`Names`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import unquote

from stackyard.errors import UsageError
from stackyard.images.dockerproxy.dockerfile import NamedImage
from stackyard.images.push_retry import PUSH_RETRY_FOR
from stackyard.images.reference import ImageReference
from stackyard.registry_login import RegistryLogin

# Local image names (``name:tag``, as the engine lists them) -> the stack whose build made
# them. An image named in another stack's repository, or by another stack's build, is
# that stack's; the proxy keeps this record (a label would cost every build one more step).
Names = Mapping[str, str]

_VERSION_PREFIX = re.compile(r"^/v[0-9]+(?:\.[0-9]+)?(?=/)")
_NAMED = re.compile(r"^/images/(?P<name>.+)/(?P<action>json|history|push|tag|get)$")
# Query parameters of POST /build (API 1.41) the proxy knows; any other is refused.
_BUILD_PARAMS = frozenset(
    {
        "dockerfile", "t", "extrahosts", "q", "nocache", "cachefrom", "pull", "rm",
        "forcerm", "memory", "memswap", "cpushares", "cpusetcpus", "cpusetmems",
        "cpuperiod", "cpuquota", "buildargs", "shmsize", "squash", "labels", "networkmode",
        "platform", "target", "outputs", "ulimits", "isolation", "buildid", "version",
    }
)  # fmt: skip
_NETWORK_MODES = frozenset({"", "default", "host", "none", "bridge"})
# BuildKit's outputs that go back to the client only (the CLI keeps their ``dest``); its
# image exporters could name or push images past the proxy, so they are refused.
_CLIENT_OUTPUTS = frozenset({"local", "tar", "cacheonly"})
# BuildKit's cache mounts (RUN --mount=type=cache) are shared by every build of the engine
# unless namespaced: each stack gets its own namespace.
CACHE_NAMESPACE_ARG = "BUILDKIT_CACHE_MOUNT_NS"
SYNTAX_ARG = "BUILDKIT_SYNTAX"  # BuildKit 0.8's frontend forwards the build to that image
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_CPU_PERIOD = 100_000  # microseconds: the CFS period the engine uses by default
_PROXY = "Stackyard's build proxy"
_DOCKER_HUB_INDEX = "https://index.docker.io/v1/"  # Docker Hub's key in a client's logins

Ownership = Literal["own", "foreign", "shared", "nameless"]


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use: cores (a hard cap), memory, processes, disk, and its CPU
    weight against tasks (Docker's cpu shares; tasks have 1024)."""

    cpus: float = 1.0
    memory: int = 2 * 1024**3
    pids: int = 2048
    disk: int = 10 * 1024**3
    cpu_shares: int = 128

    @property
    def cpu_quota(self) -> int:
        return int(self.cpus * _CPU_PERIOD)


@dataclass(frozen=True)
class StageRepository:
    """A release's second repository: the stack's repository in the registry its stage's
    target pulls from (TinyStacks' regional ECR), and that registry's login."""

    registry: str  # host:port
    path: str  # the stack's repository there
    login: RegistryLogin = field(repr=False)

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}"


@dataclass(frozen=True)
class BuildScope:
    """Whose build a proxy socket serves, and what it may use."""

    stack: str
    # The stack's registry (host:port): the platform's, or the outside registry the stack
    # pushes to; None for a local run.
    registry: str | None
    login: RegistryLogin | None = field(default=None, repr=False)  # injected for own pushes
    limits: BuildLimits = field(default_factory=BuildLimits)
    cgroup_parent: str | None = None  # the build container's cgroup: RUN steps nest in it
    push_elsewhere: bool = False  # a local run may push to other registries with its login
    path: str | None = None  # the stack's repository in ``registry``; None: the stack's name
    # The platform registry when ``registry`` is an outside one: its repositories are all
    # other stacks'.
    platform_registry: str | None = None
    # A release's stage target registry; None for builds and for a stage whose target pulls
    # from the stack's own repository. Its other repositories are other stacks'.
    stage: StageRepository | None = None
    # Where else the platform keeps stacks' images: each outside registry's
    # ``host[:port][/namespace]`` (stacks' and targets'). A repository there that is not
    # the stack's is another stack's, whatever gave the image that name (the platform's
    # default build, a deployment's pull, a release's regional push).
    spaces: tuple[str, ...] = ()

    @property
    def repository(self) -> str | None:
        """The stack's own repository, where its pushes go."""
        return f"{self.registry}/{self.own_path}" if self.registry else None

    @property
    def own_path(self) -> str:
        return self.path or self.stack

    @property
    def registries(self) -> tuple[str, ...]:
        """The registries whose logins a build never gets: the stack's, the platform's, and
        a release's stage target registry."""
        stage = self.stage.registry if self.stage is not None else None
        return tuple(r for r in (self.registry, self.platform_registry, stage) if r is not None)

    @property
    def repositories(self) -> str:
        """Where its pushes may go, as a refusal names them."""
        own = f"{self.repository} ($IMAGE_URL)"
        if self.stage is None:
            return f"its own repository {own}"
        return f"its own repositories {own} and {self.stage.repository} ($REGIONAL_ECR_IMAGE_URL)"

    def login_for(self, name: str) -> RegistryLogin | None:
        """The login for an image of the stack's own (``name`` is "own"): the stage target
        registry's for its repository there, else the stack's."""
        reference = parse_reference(name)
        stage = self.stage
        if reference is not None and stage is not None and _is_stage(reference, self):
            return stage.login
        return self.login


@dataclass(frozen=True)
class ApiRequest:
    """One request of a build, as the proxy reads it (path without /vX.Y, decoded)."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    body: bytes = b""  # read only for the small JSON bodies a decision needs (/auth)
    upgrade: str = ""  # the Upgrade header (a BuildKit session asks for h2c)
    session: str = ""  # X-Docker-Expose-Session-Uuid: the BuildKit session a request opens


@dataclass(frozen=True)
class Forward:
    """Send the request on. ``query`` replaces the client's; ``auth`` replaces its
    X-Registry-Auth (the client's is dropped when ``auth`` is None and ``keep_auth`` is
    false); ``reads`` and ``writes`` are image names to :func:`judge` first."""

    query: dict[str, list[str]]
    auth: RegistryLogin | None = field(default=None, repr=False)
    keep_auth: bool = False
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    filter_listing: bool = False  # GET /images/json: hide other stacks' images
    # GET /images/NAME/json or /history: other stacks' names of the image left out
    filter_names: Literal["", "inspect", "history"] = ""
    build: bool = False  # POST /build: drop the platform registry from X-Registry-Config
    records: tuple[str, ...] = ()  # local names the request makes: now the stack's
    retry_for: float = 0.0  # a push the registry refuses for now is sent again this long
    # POST /session: the stream is switched to h2c and relayed both ways; the id is the
    # session's, which the socket's BuildKit builds may then name.
    session: str = ""
    buildkit: bool = False  # a BuildKit build: its RUN steps need the BuildKit budget
    # A legacy build: the Dockerfile in its context (the body) whose images are judged
    # (:func:`dockerfile_refusal`) before the context's end goes on; None: no such check.
    dockerfile: str | None = None
    # A build asked to pull its bases anew (``docker build --pull``): the proxy pulls each
    # FROM image itself before judging it, and the engine builds from what it pulled.
    pull_first: bool = False
    # A build's X-Registry-Config without the platform's registries: the logins its own
    # pulls of base images use (:func:`pull_auth`).
    registry_config: str = field(default="", repr=False)


@dataclass(frozen=True)
class Refuse:
    status: int
    message: str


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


Decision = Forward | Refuse | Answer


def api_path(raw_path: str) -> str | None:
    """The request's path without its API version prefix, percent-decoded once (as the
    engine decodes it); None for a path that tries to climb or hide (``..``, ``//``)."""
    path = unquote(raw_path)
    path = _VERSION_PREFIX.sub("", path, count=1)
    if not path.startswith("/") or "//" in path or any(ord(c) < 32 for c in path):
        return None
    if any(part in (".", "..") for part in path.split("/")):
        return None
    return path


def decide(
    request: ApiRequest, scope: BuildScope, opened: Collection[str] = frozenset()
) -> Decision:
    """What to do with one request of the build of ``scope.stack``; ``opened``: the ids of
    the BuildKit sessions and builds this build's socket has passed on."""
    method, path = request.method.upper(), request.path
    query = {key: list(values) for key, values in request.query.items()}
    if path == "/session" and method == "POST":
        return _session(request, scope)
    if path == "/build" and method == "POST" and _is_buildkit(query):
        return _buildkit(query, scope, opened)
    if path == "/build/cancel" and method == "POST":
        if _first(query, "id") in opened:
            return Forward(query)
        return Refuse(403, f"{_PROXY} refused to cancel a build this build did not start")
    if path == "/_ping" and method in ("GET", "HEAD"):
        return Forward(query)
    if path in ("/version", "/info") and method == "GET":
        return Forward(query)
    if path == "/auth" and method == "POST":
        return _login(request.body, scope)
    if path == "/build" and method == "POST":
        return _build(query, scope)
    if path == "/images/create" and method == "POST":
        return _pull(query, scope)
    if path == "/images/json" and method == "GET":
        return Forward(query, filter_listing=True)
    if path == "/images/search" and method == "GET":
        return Forward(query)
    if path == "/images/get" and method == "GET":
        return Forward(query, reads=tuple(query.get("names", [])))
    if path.startswith("/distribution/") and path.endswith("/json") and method == "GET":
        return _distribution(path.removeprefix("/distribution/").removesuffix("/json"), scope)
    named = _NAMED.match(path)
    if named is not None and method in ("GET", "POST"):
        return _named(method, named["name"], named["action"], query, scope)
    if path.startswith("/images/") and method == "DELETE":
        return Forward(query, writes=(path.removeprefix("/images/"),))
    return Refuse(403, _refusal(method, path))


def _refusal(method: str, path: str) -> str:
    section = path.strip("/").split("/")[0] or "/"
    what = {
        "containers": "running, creating or changing containers (docker run, create, cp, "
        "kill, rm, inspect of a container); a build only builds, tags and pushes images",
        "exec": "exec into a container",
        "volumes": "volumes",
        "networks": "networks",
        "swarm": "the swarm API",
        "services": "swarm services (docker service create)",
        "nodes": "swarm nodes",
        "tasks": "swarm tasks",
        "secrets": "swarm secrets",
        "configs": "swarm configs",
        "plugins": "plugins",
        "grpc": "BuildKit's control API (buildx); docker build with DOCKER_BUILDKIT=1 or =0 works",
        "commit": "committing containers",
        "events": "the engine's events, which show every stack's containers",
        "system": "the engine's system data, which covers every stack",
    }.get(section)
    if section == "images" and path == "/images/load":
        what = "docker load, which can replace any image in the engine"
    if section in ("images", "build") and path.endswith("/prune"):
        what = "pruning, which removes images other builds use"
    reason = what or f"{method} {path}"
    return f"{_PROXY} refused {reason}. A build may build, tag, push to its own stack's " \
        "repository, pull, and inspect or list images."  # fmt: skip


def _login(body: bytes, scope: BuildScope) -> Decision:
    """``docker login``: the platform registry is already logged in (the proxy adds the
    stack's login to its pushes); another registry is asked, as the engine would."""
    try:
        server = str(json.loads(body or b"{}").get("serveraddress", ""))
    except (ValueError, AttributeError):
        return Refuse(400, f"{_PROXY}: the login request is not valid JSON")
    host = server.removeprefix("https://").removeprefix("http://").rstrip("/")
    stage = scope.stage.registry if scope.stage is not None else None
    if host and host in (scope.registry, stage):
        return Answer(200, {"Status": "Login Succeeded", "IdentityToken": ""})
    return Forward({}, keep_auth=True)


def _build(query: dict[str, list[str]], scope: BuildScope) -> Decision:
    unknown = sorted(set(query) - _BUILD_PARAMS - {"remote", "cgroupparent", "session"})
    if unknown:
        return Refuse(403, f"{_PROXY} refused docker build: unknown option(s) {unknown}")
    if _first(query, "remote"):
        return Refuse(
            403,
            f"{_PROXY} refused docker build from a URL (remote): the engine would fetch it "
            "from the host's network. Build from the context directory instead.",
        )
    if _first(query, "cgroupparent"):
        return Refuse(403, f"{_PROXY} refused docker build --cgroup-parent: the build's "
                      "RUN steps run within the build's own limits")  # fmt: skip
    network = _first(query, "networkmode")
    if network not in _NETWORK_MODES:
        return Refuse(
            403,
            f"{_PROXY} refused docker build --network {network}: a build's RUN steps may "
            "use host, bridge, default or none, not another container's or a named network",
        )
    limits = scope.limits
    memory = min(_int(query, "memory") or limits.memory, limits.memory)
    rewritten = {
        **query,
        "memory": [str(memory)],
        "memswap": [str(memory)],
        "cpushares": [str(limits.cpu_shares)],
        "cpuperiod": [str(_CPU_PERIOD)],
        "cpuquota": [str(limits.cpu_quota)],
    }
    tags = query.get("t", [])
    shm = _int(query, "shmsize")
    if shm is not None and shm > memory:
        rewritten["shmsize"] = [str(memory)]
    if scope.cgroup_parent:
        rewritten["cgroupparent"] = [scope.cgroup_parent]
    # The build's intermediate containers go, failed or not (the client's rm/forcerm
    # leave a failed step's container on the shared engine).
    rewritten["rm"] = rewritten["forcerm"] = ["1"]
    # --pull: the proxy pulls the bases it judges; a second pull by the engine could get
    # other images (a registry may answer differently), so the engine builds from those.
    pull_first = is_true(query, "pull")
    rewritten.pop("pull", None)
    return Forward(
        rewritten,
        reads=tuple(_json_list(query, "cachefrom")),
        writes=tuple(tags),
        build=True,
        records=local_names(tags, scope),
        dockerfile=_first(query, "dockerfile") or "Dockerfile",
        pull_first=pull_first,
    )


def _is_buildkit(query: Mapping[str, Sequence[str]]) -> bool:
    return _first(query, "version") == "2" or bool(_first(query, "session"))


def _session(request: ApiRequest, scope: BuildScope) -> Decision:
    """POST /session: the BuildKit session of the build's docker CLI (its context, its
    Dockerfile, the outputs it receives), a gRPC stream the engine calls into."""
    if scope.cgroup_parent is None:
        return Refuse(403, _no_buildkit_budget())
    if request.upgrade.lower() != "h2c":
        return Refuse(400, f"{_PROXY}: a BuildKit session upgrades its connection to h2c")
    if not _SESSION_ID.match(request.session):
        return Refuse(400, f"{_PROXY}: a BuildKit session needs an id of letters and digits")
    return Forward({}, session=request.session)


def _buildkit(query: dict[str, list[str]], scope: BuildScope, opened: Collection[str]) -> Decision:
    """A BuildKit build (``DOCKER_BUILDKIT=1 docker build``): the legacy build's rules,
    plus its own: the session must be this build's, outputs go back to the client only,
    and cache mounts are the stack's own."""
    if scope.cgroup_parent is None:
        return Refuse(403, _no_buildkit_budget())
    session = _first(query, "session")
    if not session or session not in opened:
        return Refuse(403, f"{_PROXY} refused a BuildKit build: its session ({session or 'none'}) "
                      "was not opened by this build's docker client")  # fmt: skip
    remote = _first(query, "remote")
    if remote not in ("", "client-session"):
        return Refuse(403, f"{_PROXY} refused a BuildKit build from {remote!r}: build from "
                      "the context directory (a context on stdin is not supported)")  # fmt: skip
    refusal = _outputs(query)
    if refusal is not None:
        return refusal
    legacy = _build({k: v for k, v in query.items() if k not in ("remote", "session")}, scope)
    if not isinstance(legacy, Forward):
        return legacy
    args = _json_dict(query, "buildargs")
    if args is None:
        return Refuse(400, f"{_PROXY}: docker build's build-args are not a JSON object")
    if SYNTAX_ARG in args:
        return Refuse(403, f"{_PROXY} refused a BuildKit build with the build-arg {SYNTAX_ARG}: "
                      "it names a Dockerfile frontend image, which could read images the "
                      "proxy does not check")  # fmt: skip
    args[CACHE_NAMESPACE_ARG] = f"stackyard/{scope.stack}"
    rewritten = {**legacy.query, "buildargs": [json.dumps(args)], "session": [session]}
    rewritten.pop("cgroupparent", None)  # BuildKit ignores it: the budget holds its steps
    if remote:
        rewritten["remote"] = [remote]
    # The Dockerfile comes over the session, not in the body (see docs/decisions.md).
    return replace(legacy, query=rewritten, buildkit=True, dockerfile=None)


def _outputs(query: Mapping[str, Sequence[str]]) -> Refuse | None:
    """BuildKit's ``--output``: back to the client only (type=local or tar, whose ``dest``
    the CLI keeps), never an exporter that names or pushes images in the engine's place."""
    try:
        outputs = json.loads(_first(query, "outputs") or "[]")
    except ValueError:
        return Refuse(400, f"{_PROXY}: docker build's outputs are not valid JSON")
    if not isinstance(outputs, list):
        return Refuse(400, f"{_PROXY}: docker build's outputs are not a list")
    for output in outputs:
        kind = str(output.get("Type", "")) if isinstance(output, dict) else ""
        attrs = output.get("Attrs") if isinstance(output, dict) else None
        if kind not in _CLIENT_OUTPUTS:
            return Refuse(
                403,
                f"{_PROXY} refused docker build --output type={kind or '?'}: a build's "
                "outputs go to its own directory (type=local or type=tar); name images "
                "with -t and push them with docker push",
            )
        if attrs:
            names = ",".join(sorted(str(key) for key in attrs))
            return Refuse(403, f"{_PROXY} refused docker build --output type={kind} with "
                          f"{names}: only dest (kept by the client) is allowed")  # fmt: skip
    return None


def _no_buildkit_budget() -> str:
    return (
        f"{_PROXY} refused a BuildKit build: on this engine its RUN steps could not be held "
        "to the build's limits (that needs the cgroupfs cgroup driver). Set DOCKER_BUILDKIT=0."
    )


def _pull(query: dict[str, list[str]], scope: BuildScope) -> Decision:
    if _first(query, "fromSrc"):
        return Refuse(403, f"{_PROXY} refused docker import: it can fetch a URL from the "
                      "host's network and replace any image. Build the image instead.")  # fmt: skip
    image = _first(query, "fromImage")
    tag = _first(query, "tag")
    name = f"{image}@{tag}" if tag.startswith("sha256:") else f"{image}:{tag}" if tag else image
    where = _registry_of(name, scope)
    if where == "foreign":
        return Refuse(403, _foreign(name, scope, "pull"))
    if where == "own":
        # The platform's registry turns read-only for its garbage collection: a build's
        # push waits that out as the platform's own pushes do.
        return Forward(query, auth=scope.login_for(name), retry_for=PUSH_RETRY_FOR)
    return Forward(query, keep_auth=True)


def _distribution(name: str, scope: BuildScope) -> Decision:
    where = _registry_of(name, scope)
    if where == "foreign":
        return Refuse(403, _foreign(name, scope, "read"))
    if where == "own":
        return Forward({}, auth=scope.login_for(name))
    return Forward({}, keep_auth=True)


def _named(
    method: str, name: str, action: str, query: dict[str, list[str]], scope: BuildScope
) -> Decision:
    if action == "json" and method == "GET":
        return Forward(query, reads=(name,), filter_names="inspect")
    if action == "history" and method == "GET":
        return Forward(query, reads=(name,), filter_names="history")
    if action == "get" and method == "GET":
        return Forward(query, reads=(name,))
    if action == "tag" and method == "POST":
        repo, tag = _first(query, "repo"), _first(query, "tag") or "latest"
        if not repo:
            return Refuse(400, f"{_PROXY}: docker tag needs a repository name")
        # A docker CLI 23+ sends the name normalised (docker.io/library/busybox); it is
        # judged, and named in a refusal, as the engine lists it (busybox:latest).
        target = local_name(f"{repo}:{tag}") or f"{repo}:{tag}"
        return Forward(query, reads=(name,), writes=(target,), records=local_names([target], scope))
    if action == "push" and method == "POST":
        return _push(name, _first(query, "tag"), query, scope)
    return Refuse(403, _refusal(method, f"/images/{name}/{action}"))


def _push(name: str, tag: str, query: dict[str, list[str]], scope: BuildScope) -> Decision:
    target = f"{name}:{tag}" if tag else name
    where = _registry_of(target, scope)
    if where == "own":
        # The platform's registry turns read-only for its garbage collection: a build's
        # push waits that out as the platform's own pushes do.
        return Forward(query, auth=scope.login_for(target), retry_for=PUSH_RETRY_FOR)
    if where == "foreign":
        return Refuse(403, _foreign(target, scope, "push to"))
    if scope.push_elsewhere:
        return Forward(query, keep_auth=True)
    return Refuse(
        403,
        f"{_PROXY} refused docker push {target}: a {_run(scope)} of {scope.stack} pushes "
        f"only to {scope.repositories}",
    )


def local_names(names: Sequence[str], scope: BuildScope) -> tuple[str, ...]:
    """The names outside the stack's repository, as the engine lists them."""
    found = (local_name(n) for n in names if _registry_of(n, scope) != "own")
    return tuple(name for name in found if name is not None)


def local_name(name: str) -> str | None:
    """``name`` as the engine lists it (``busybox:latest``, ``reg:5000/app:v1``); None for
    an image id or a digest."""
    reference = parse_reference(name)
    if reference is None or reference.digest is not None:
        return None
    repository = reference.repository
    if reference.registry in (None, "docker.io", "index.docker.io"):
        repository = repository.removeprefix("library/")
        return f"{repository}:{reference.tag or 'latest'}"
    return f"{reference.registry}/{repository}:{reference.tag or 'latest'}"


def _foreign(name: str, scope: BuildScope, verb: str) -> str:
    return (
        f"{_PROXY} refused to {verb} {name}: that is another stack's repository; a "
        f"{_run(scope)} of {scope.stack} may only use {scope.repositories}"
    )


def _run(scope: BuildScope) -> str:
    return "build" if scope.stage is None else "release"


def _registry_of(name: str, scope: BuildScope) -> Literal["own", "foreign", "elsewhere"]:
    """Whether ``name`` is in the stack's own repository, another stack's, or elsewhere."""
    reference = parse_reference(name)
    if reference is None or scope.registry is None:
        return "elsewhere"
    if reference.registry == scope.registry and reference.repository == scope.own_path:
        return "own"
    if _is_stage(reference, scope):
        return "own"
    if reference.registry in scope.registries or _in_spaces(reference, scope.spaces):
        return "foreign"
    return "elsewhere"


def _in_spaces(reference: ImageReference, spaces: Collection[str]) -> bool:
    """Whether ``reference`` is in one of the platform's outside registry spaces."""
    name = f"{reference.registry or 'docker.io'}/{reference.repository}"
    return any(name.startswith(f"{space}/") for space in spaces)


def _is_stage(reference: ImageReference, scope: BuildScope) -> bool:
    """Whether ``reference`` is in the stack's repository in a release's stage target
    registry."""
    stage = scope.stage
    return stage is not None and (reference.registry, reference.repository) == (
        stage.registry,
        stage.path,
    )


def parse_reference(name: str) -> ImageReference | None:
    """An image reference, or None when ``name`` is an image id or not a reference."""
    if re.fullmatch(r"(sha256:)?[0-9a-f]{12,64}", name):
        return None
    try:
        return ImageReference.parse(name)
    except UsageError:
        return None


# -- judging an image the engine has ----------------------------------------------------------


def ownership(
    image: Mapping[str, Any], scope: BuildScope, names: Names, built: Collection[str] = ()
) -> Ownership:
    """Whose an image is: the one rule every check applies (reads, writes by id, listings,
    the Dockerfile's images), from the engine's record of it (an inspect or a listing
    entry), ``names`` and ``built`` (the ids of the images this build's own ``docker
    build``s made).

    - **own**: a name of it is in the stack's repository, or a local name a build of the
      stack made, or this build made it;
    - **shared**: else, a name of it is a base image's (outside the platform's registries,
      made by no stack's build): its content is that base image's, whoever else tagged it
      (``docker tag python:3.11-slim <repo>:base``, or a build adding nothing to its base);
    - **foreign**: else, its names are other stacks' (their repositories, or local names
      their builds made);
    - **nameless**: it has no name at all (an intermediate image of a legacy build, an
      image whose tag moved on, a ``docker build`` without ``-t``) and this build did not
      make it. The engine tells no owner: its parents are base images or other nameless
      layers, and who built on it is not recorded anywhere."""
    if str(image.get("Id", "")) in built:
        return "own"
    kinds = {_name_owner(ref, scope, names) for ref in _names_of(image)}
    if "own" in kinds:
        return "own"
    if "shared" in kinds:
        return "shared"
    return "foreign" if kinds else "nameless"


def _names_of(image: Mapping[str, Any]) -> list[str]:
    """An image's names; a listing gives a nameless one ``<none>:<none>``/``<none>@<none>``."""
    refs = (str(ref) for ref in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []))
    return [ref for ref in refs if not ref.startswith("<none>")]


def _name_owner(ref: str, scope: BuildScope, names: Names) -> Literal["own", "foreign", "shared"]:
    """Whose one name of an image is (as the engine lists it: ``name:tag`` or
    ``name@digest``)."""
    where = _registry_of(ref, scope)
    if where != "elsewhere":
        return where
    builder = names.get(ref)
    if builder is None:
        return "shared"
    return "own" if builder == scope.stack else "foreign"


def judge(
    name: str,
    image: Mapping[str, Any] | None,
    scope: BuildScope,
    purpose: Literal["read", "write"],
    names: Names,
    built: Collection[str] = (),
) -> Refuse | None:
    """Whether the build may read or (re)write ``name``, which the engine knows as ``image``
    (None: no such image). Writing creates or moves a tag, or deletes one."""
    where = _registry_of(name, scope)
    if where == "foreign":
        return Refuse(403, _foreign(name, scope, purpose))
    if image is None or where == "own":
        return None
    if purpose == "write":
        return _write_refusal(name, image, scope, names, built)
    reason = _unreadable(ownership(image, scope, names, built))
    return None if reason is None else Refuse(403, f"{_PROXY} refused to read {name}: {reason}")


def _unreadable(owner: Ownership) -> str | None:
    """Why a build may not read an image whose owner is ``owner``; None: it may."""
    if owner == "foreign":
        return "the engine holds that image for another stack"
    if owner == "nameless":
        return (
            "that image has no name and this build did not make it, so whose it is cannot "
            "be told; use a base image's name or one of the stack's own"
        )
    return None


def _write_refusal(
    name: str, image: Mapping[str, Any], scope: BuildScope, names: Names, built: Collection[str]
) -> Refuse | None:
    """A name outside the stack's repository that the engine holds: the build may move or
    remove it only when a build of the stack made it. An id or digest (``docker rmi``)
    removes every name of its image: all of them must be the stack's."""
    local = local_name(name)
    if local is None:
        refs = _names_of(image)
        mine = {_name_owner(ref, scope, names) for ref in refs} <= {"own"}
        if mine and (refs or str(image.get("Id", "")) in built):
            return None
        return Refuse(403, f"{_PROXY} refused to remove {name}: not every name of that image "
                      f"is {scope.stack}'s, and other builds may use it")  # fmt: skip
    builder = names.get(local)
    if builder == scope.stack:
        return None
    if builder is not None:
        return Refuse(403, f"{_PROXY} refused to write {name}: it is another stack's image")
    return Refuse(
        403,
        f"{_PROXY} refused to replace or remove {name}: the engine's image of that name "
        f"was not made by a build of {scope.stack}, and other builds may use it. Use a "
        f"name of your own, such as $IMAGE_URL:<tag> or {scope.stack}-<name>",
    )


def dockerfile_refusal(
    dockerfile: str,
    named: NamedImage,
    image: Mapping[str, Any] | None,
    scope: BuildScope,
    names: Names,
    built: Collection[str] = (),
) -> Refuse | None:
    """Whether a build may read the image its Dockerfile names at ``named`` (the engine
    knows it as ``image``; None: not held locally, so the engine would pull it, without
    a login to the platform's registries). The engine resolves a local image by name,
    digest or id without asking any registry: it is judged by :func:`ownership`, as every
    other read is."""
    if _registry_of(named.name, scope) == "foreign":
        reason: str | None = "that is another stack's repository"
    elif image is None:
        return None
    else:
        reason = _unreadable(ownership(image, scope, names, built))
    if reason is None:
        return None
    return Refuse(
        403,
        f"{_PROXY} refused the build: {dockerfile} line {named.line} ({named.text}) reads "
        f"{named.name} ({named.kind}): {reason}. A build of {scope.stack} may read base "
        f"images and {scope.repositories}",
    )


def pull_request(name: str) -> tuple[str, str] | None:
    """The engine's pull (``fromImage``, ``tag``) of the image a Dockerfile names, as the
    builder would pull it (no tag: ``latest``; a digest pins it); None for an image id,
    which the engine cannot pull."""
    if re.fullmatch(r"(sha256:)?[0-9a-f]{64}", name):
        return None
    try:
        reference = ImageReference.parse(name)
    except UsageError:
        return None
    repository = ImageReference(reference.registry, reference.repository)
    return str(repository), reference.reference


def pull_auth(config_header: str, name: str, scope: BuildScope) -> str | None:
    """The X-Registry-Auth for the proxy's pull of the base image ``name``: the stack's
    login for its own repository (as for ``docker pull``), else the entry of the build's
    X-Registry-Config the engine's builder would choose (Docker 20.10
    ``registry.ResolveAuthConfig``: the key equal to the registry's index name, else a key
    that names that host; Docker Hub's under its index URL only); None when there is
    none."""
    reference = parse_reference(name)
    if reference is None:
        return None
    if _registry_of(name, scope) == "own":
        login = scope.login_for(name)
        return registry_auth_header(login) if login is not None else None
    configs = _registry_configs(config_header)
    if not configs:
        return None
    host = reference.registry or "docker.io"
    if host in ("docker.io", "index.docker.io"):
        found = configs.get(_DOCKER_HUB_INDEX)
    else:
        found = configs.get(host)
        if found is None:
            found = next((v for k, v in configs.items() if _hostname(str(k)) == host), None)
    if not isinstance(found, dict) or not found:
        return None
    return base64.urlsafe_b64encode(json.dumps(found).encode()).decode("ascii")


def _hostname(key: str) -> str:
    """A login key as the engine compares it: scheme and path stripped."""
    return key.removeprefix("http://").removeprefix("https://").split("/", 1)[0]


def pull_refusal(dockerfile: str, named: NamedImage, engine_says: str) -> Refuse:
    """A base image the engine does not hold, which the proxy could not pull: the build
    would fail there too; the line and the registry's reason say which and why."""
    return Refuse(
        400,
        f"{_PROXY} refused the build: {dockerfile} line {named.line} ({named.text}) builds "
        f"from {named.name}, which the engine does not hold, and the proxy's pull of it "
        f"failed: {engine_says}. The proxy pulls a base image (with the build's own "
        "registry logins) to check what its ONBUILD triggers read; check the name, or "
        "docker login to its registry (a BuildKit build sends no login: docker pull it "
        "first)",
    )


def unreadable_name(dockerfile: str, named: NamedImage, engine_says: str) -> Refuse:
    """A name in the Dockerfile the engine cannot parse (``FROM Busybox``): the build would
    fail there; the engine's reason and the line say which name and why."""
    return Refuse(
        400,
        f"{_PROXY} refused the build: {dockerfile} line {named.line} ({named.text}) names "
        f"{named.name}, which the engine cannot read as an image: {engine_says}",
    )


def build_args(query: Mapping[str, Sequence[str]]) -> dict[str, str | None]:
    """A build's ``buildargs`` (a JSON object; a null value is an argument left unset)."""
    args = _json_dict(query, "buildargs") or {}
    return {str(k): None if v is None else str(v) for k, v in args.items()}


def visible(
    listing: list[dict[str, Any]], scope: BuildScope, names: Names, built: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The images a build sees in ``docker images``: those it may read (its own and base
    images), not other stacks' nor nameless ones it did not make; and of a base image
    another stack also tagged, not that stack's names."""
    shown = [e for e in listing if _unreadable(ownership(e, scope, names, built)) is None]
    return [without_foreign_names(entry, scope, names) for entry in shown]


def without_foreign_names(
    entry: dict[str, Any], scope: BuildScope, names: Names, fields: Sequence[str] = ()
) -> dict[str, Any]:
    """An image's record (a listing's entry, an inspect, a history's layer: ``fields``
    holds its names) without other stacks' names of it: a base image another stack also
    tagged shows only its other names."""
    kept = dict(entry)
    for field_name in fields or ("RepoTags", "RepoDigests"):
        refs = entry.get(field_name)
        if isinstance(refs, list):
            kept[field_name] = [
                ref for ref in refs if _name_owner(str(ref), scope, names) != "foreign"
            ]
    return kept


def names_shown(
    answer: Any, how: Literal["inspect", "history"], scope: BuildScope, names: Names
) -> Any:
    """An image's inspect or history answer (JSON) as a build sees it: without other
    stacks' names (the listing hides them too)."""
    if how == "inspect" and isinstance(answer, dict):
        return without_foreign_names(answer, scope, names)
    if how == "history" and isinstance(answer, list):
        return [
            without_foreign_names(layer, scope, names, ("Tags",))
            if isinstance(layer, dict)
            else layer
            for layer in answer
        ]
    return answer


def registry_auth_header(login: RegistryLogin) -> str:
    """The X-Registry-Auth value for ``login``: base64url of its JSON."""
    payload = {
        "username": login.username,
        "password": login.password,
        "serveraddress": login.registry,
    }
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode("ascii")


def without_registry(config_header: str, *registries: str) -> str:
    """An X-Registry-Config (base64url JSON: registry -> auth) without the entries of
    ``registries`` (the stack's, the platform's): a build's FROM never pulls another
    stack's image with a login."""
    if not registries or not config_header:
        return config_header
    configs = _registry_configs(config_header)
    if configs is None:
        return ""
    kept = {k: v for k, v in configs.items() if not any(r in str(k) for r in registries)}
    return base64.urlsafe_b64encode(json.dumps(kept).encode()).decode("ascii")


def _registry_configs(config_header: str) -> dict[str, Any] | None:
    """An X-Registry-Config's logins (registry -> auth); None when it is absent or not
    base64url JSON of an object."""
    if not config_header:
        return None
    try:
        padded = config_header + "=" * (-len(config_header) % 4)
        configs = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return None
    return configs if isinstance(configs, dict) else None


def is_true(query: Mapping[str, Sequence[str]], key: str) -> bool:
    """A boolean query parameter as the engine reads it."""
    value = _first(query, key).strip().lower()
    return value not in ("", "0", "no", "false", "none")


def _first(query: Mapping[str, Sequence[str]], key: str) -> str:
    values = query.get(key) or [""]
    return values[0]


def _int(query: Mapping[str, Sequence[str]], key: str) -> int | None:
    value = _first(query, key)
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None


def _json_dict(query: Mapping[str, Sequence[str]], key: str) -> dict[str, Any] | None:
    """The JSON object in ``key`` ({} when absent); None when it is not one."""
    try:
        values = json.loads(_first(query, key) or "{}")
    except ValueError:
        return None
    return dict(values) if isinstance(values, dict) else None


def _json_list(query: Mapping[str, Sequence[str]], key: str) -> list[str]:
    try:
        values = json.loads(_first(query, key) or "[]")
    except ValueError:
        return []
    return [str(v) for v in values] if isinstance(values, list) else []
