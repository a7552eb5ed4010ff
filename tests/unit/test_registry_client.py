"""RegistryClient against an in-memory OCI registry behind httpx.MockTransport (no process)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from stackyard.errors import NotFoundError, PermanentError, RetryableError, UsageError
from stackyard.images.manifest import DOCKER_MANIFEST, OCI_INDEX, Manifest
from stackyard.images.reference import ImageReference, ManifestRef
from stackyard.images.registry import RegistryClient
from stackyard.images.registry_auth import parse_challenge
from stackyard.images.registry_transport import default_scheme
from tests.integration.mute import mute_endpoint
from tests.receivers import free_port

ENDPOINT = "registry.test"
DIGEST = "sha256:" + "a" * 64


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    """The distribution API subset the client uses; records every request it sees."""

    auth: str = "none"  # "none", "basic" or "bearer"
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    repo_blobs: set[tuple[str, str]] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # statuses to answer before working
    send_digest_header: bool = True
    uploads: dict[str, bytearray] = field(default_factory=dict)
    token_requests: list[httpx.Request] = field(default_factory=list)

    def push_image(self, repo: str, tag: str, layers: list[bytes]) -> Manifest:
        config = json.dumps({"architecture": "amd64", "n": len(layers)}).encode()
        for blob in (config, *layers):
            self.blobs[sha(blob)] = blob
            self.repo_blobs.add((repo, sha(blob)))
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "x", "size": len(config), "digest": sha(config)},
            "layers": [{"mediaType": "y", "size": len(b), "digest": sha(b)} for b in layers],
        }
        # Odd spacing on purpose: a client that re-serialises would change the digest.
        raw = json.dumps(document, indent=3, separators=(" ,", ":  ")).encode()
        self.manifests[(repo, sha(raw))] = (raw, DOCKER_MANIFEST)
        self.tags[(repo, tag)] = sha(raw)
        return Manifest(sha(raw), DOCKER_MANIFEST, raw)

    def authorised(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("Authorization", "")
        if self.auth == "basic":
            good = "Basic " + base64.b64encode(b"alice:secret").decode()
            if header != good:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        if self.auth == "bearer" and header != "Bearer tok-1":
            challenge = (
                'Bearer realm="https://auth.test/token",service="registry.test",'
                'scope="repository:app:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        good = "Basic " + base64.b64encode(b"alice:secret").decode()
        if request.headers.get("Authorization") != good:
            return httpx.Response(401, json={"details": "bad credentials"})
        return httpx.Response(200, json={"access_token": "tok-1", "expires_in": 300})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return self.token(request)
        self.requests.append(request)
        if self.fail_next:
            return httpx.Response(self.fail_next.pop(0), json={"errors": []})
        refused = self.authorised(request)
        if refused is not None:
            return refused
        return self.route(request)

    def route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200, json={})
        if path == "/v2/_catalog":
            repos = sorted({repo for repo, _ in self.tags})
            return httpx.Response(200, json={"repositories": repos})
        repo, kind, rest = self.split(path)
        if kind == "manifests":
            return self.manifest(request, repo, rest)
        if kind == "tags":
            return self.tag_list(request, repo)
        if kind == "blobs" and rest.startswith("uploads"):
            return self.upload(request, repo, rest)
        if kind == "blobs":
            return self.blob(request, repo, rest)
        return httpx.Response(404)

    @staticmethod
    def split(path: str) -> tuple[str, str, str]:
        for kind in ("/manifests/", "/blobs/", "/tags/"):
            if kind in path:
                repo, _, rest = path[len("/v2/") :].partition(kind)
                return repo, kind.strip("/"), rest
        return "", "", ""

    def manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            raw = request.content
            self.manifests[(repo, sha(raw))] = (raw, request.headers["Content-Type"])
            if not ref.startswith("sha256:"):
                self.tags[(repo, ref)] = sha(raw)
            return httpx.Response(201, headers={"Docker-Content-Digest": sha(raw)})
        digest = ref if ref.startswith("sha256:") else self.tags.get((repo, ref))
        if digest is None or (repo, digest) not in self.manifests:
            error = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            return httpx.Response(404, json=error)
        if request.method == "DELETE":
            del self.manifests[(repo, digest)]
            for key in [k for k, v in self.tags.items() if v == digest and k[0] == repo]:
                del self.tags[key]
            return httpx.Response(202)
        raw, media_type = self.manifests[(repo, digest)]
        headers = {"Content-Type": media_type}
        if self.send_digest_header:
            headers["Docker-Content-Digest"] = digest
        body = b"" if request.method == "HEAD" else raw
        return httpx.Response(200, headers=headers, content=body)

    def tag_list(self, request: httpx.Request, repo: str) -> httpx.Response:
        names = sorted(tag for r, tag in self.tags if r == repo)
        if not names:
            return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})
        n = int(request.url.params.get("n", "1000"))
        last = request.url.params.get("last")
        start = names.index(last) + 1 if last else 0
        page = names[start : start + n]
        headers = {}
        if start + n < len(names):
            headers["Link"] = f'</v2/{repo}/tags/list?last={page[-1]}&n={n}>; rel="next"'
        return httpx.Response(200, json={"name": repo, "tags": page}, headers=headers)

    def blob(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        if (repo, digest) not in self.repo_blobs:
            return httpx.Response(404)
        body = b"" if request.method == "HEAD" else self.blobs[digest]
        return httpx.Response(200, content=body)

    def upload(self, request: httpx.Request, repo: str, rest: str) -> httpx.Response:
        mount, source = request.url.params.get("mount"), request.url.params.get("from")
        if request.method == "POST" and mount and (source, mount) in self.repo_blobs:
            self.repo_blobs.add((repo, mount))
            return httpx.Response(201)
        if request.method == "POST":
            upload_id = f"u{len(self.uploads)}"
            self.uploads[upload_id] = bytearray()
            return httpx.Response(
                202, headers={"Location": f"/v2/{repo}/blobs/uploads/{upload_id}"}
            )
        upload_id = rest.split("/")[-1]
        if request.method == "PATCH":
            self.uploads[upload_id] += request.read()
            return httpx.Response(202, headers={"Location": str(request.url.path)})
        data = bytes(self.uploads.pop(upload_id))
        digest = request.url.params["digest"]
        if sha(data) != digest:
            return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
        self.blobs[digest] = data
        self.repo_blobs.add((repo, digest))
        return httpx.Response(201)


def client_for(
    fake: Callable[[httpx.Request], httpx.Response], endpoint: str = ENDPOINT, **kwargs: object
) -> RegistryClient:
    options: dict[str, object] = {"retries": 3, "backoff": 0.001, **kwargs}
    return RegistryClient(endpoint, transport=httpx.MockTransport(fake), **options)  # type: ignore[arg-type]


def count(fake: FakeRegistry, method: str, fragment: str) -> int:
    return sum(1 for r in fake.requests if r.method == method and fragment in str(r.url))


# -- references ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app", ImageReference(None, "app")),
        ("127.0.0.1:5000/app:dev", ImageReference("127.0.0.1:5000", "app", "dev")),
        ("localhost/team/app:v1.2", ImageReference("localhost", "team/app", "v1.2")),
        (f"ghcr.io/o/app@{DIGEST}", ImageReference("ghcr.io", "o/app", None, DIGEST)),
        ("team/app:dev", ImageReference(None, "team/app", "dev")),
    ],
)  # fmt: skip
def test_parse_image_reference(text: str, expected: ImageReference) -> None:
    assert ImageReference.parse(text) == expected
    assert str(ImageReference.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("App:dev", "repository 'App'"),
        ("app:-dev", "tag '-dev'"),
        ("app@sha256:xyz", "digest 'sha256:xyz'"),
        ("bad_host:99x/app", "registry host 'bad_host:99x'"),
        ("", "empty"),
        ("app//x", "repository 'app//x'"),
    ],
)
def test_bad_image_reference_names_the_bad_part(text: str, bad_part: str) -> None:
    with pytest.raises(UsageError, match=bad_part):
        ImageReference.parse(text)


def test_reference_prefers_digest_and_defaults_to_latest() -> None:
    assert ImageReference.parse("app").manifest_ref == ManifestRef("app", "latest")
    pinned = ImageReference.parse("app:dev@sha256:" + "b" * 64)
    assert pinned.reference == "sha256:" + "b" * 64
    assert str(ManifestRef("app", pinned.reference)) == "app@sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("endpoint", "scheme"),
    [("127.0.0.1:5000", "http"), ("localhost:5000", "http"), ("127.9.9.9", "http"),
     ("[::1]:5000", "http"), ("ghcr.io", "https"), ("10.0.0.1:5000", "https")],
)  # fmt: skip
def test_default_scheme_is_http_only_for_loopback(endpoint: str, scheme: str) -> None:
    assert default_scheme(endpoint) == scheme


def test_parse_bearer_challenge() -> None:
    header = 'Bearer realm="https://a.test/t",service="reg",scope="repository:x/y:pull,push"'
    challenge = parse_challenge(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://a.test/t",
        "service": "reg",
        "scope": "repository:x/y:pull,push",
    }


# -- reading -------------------------------------------------------------------------------


def test_resolve_uses_the_digest_header_and_accepts_all_manifest_types() -> None:
    fake = FakeRegistry()
    image = fake.push_image("app", "dev", [b"layer"])
    with client_for(fake) as client:
        assert client.resolve("app", "dev") == image.digest
    accept = fake.requests[-1].headers["Accept"]
    for media_type in (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ):
        assert media_type in accept
    assert fake.requests[-1].method == "HEAD"


def test_resolve_falls_back_to_hashing_the_body_without_digest_header() -> None:
    fake = FakeRegistry(send_digest_header=False)
    image = fake.push_image("app", "dev", [b"layer"])
    with client_for(fake) as client:
        assert client.resolve("app", "dev") == image.digest


def test_get_manifest_returns_exact_bytes_and_media_type() -> None:
    fake = FakeRegistry()
    image = fake.push_image("app", "dev", [b"l1", b"l2"])
    with client_for(fake) as client:
        assert client.get_manifest("app", "dev") == image


def test_list_tags_follows_link_pages() -> None:
    fake = FakeRegistry()
    for tag in ("a", "b", "c", "d", "e"):
        fake.push_image("app", tag, [tag.encode()])
    with client_for(fake) as client:
        assert client.list_tags("app", page_size=2) == ["a", "b", "c", "d", "e"]
        assert client.list_repositories() == ["app"]
    assert count(fake, "GET", "/tags/list") == 3


# -- writing -------------------------------------------------------------------------------


def test_retag_puts_the_exact_bytes_and_moves_no_blob() -> None:
    fake = FakeRegistry()
    image = fake.push_image("app", "dev", [b"x" * 1000])
    with client_for(fake) as client:
        assert client.retag("app", "dev", "staging") == image.digest
        assert client.counts.blob_uploads == 0
        assert client.counts.manifest_puts == 1
    put = next(r for r in fake.requests if r.method == "PUT")
    assert put.content == image.raw
    assert put.headers["Content-Type"] == DOCKER_MANIFEST
    assert not any("/blobs/" in str(r.url) for r in fake.requests)
    assert fake.tags[("app", "staging")] == image.digest


def test_copy_within_a_registry_mounts_blobs() -> None:
    fake = FakeRegistry()
    image = fake.push_image("app", "dev", [b"l1", b"l2"])
    with client_for(fake) as client:
        assert client.copy("app", "dev", to_repository="eu/app", to_reference="staging") == (
            image.digest
        )
        assert (
            client.counts.blob_mounts,
            client.counts.blob_uploads,
            client.counts.bytes_uploaded,
        ) == (3, 0, 0)
    mounts = [r for r in fake.requests if r.method == "POST"]
    assert mounts[0].url.params["from"] == "app"
    assert fake.tags[("eu/app", "staging")] == image.digest


def test_copy_to_another_registry_streams_blobs_then_the_manifest() -> None:
    source, target = FakeRegistry(), FakeRegistry()
    image = source.push_image("app", "dev", [b"l1" * 100, b"l2"])
    with client_for(source) as src, client_for(target, "other.test") as dst:
        digest = src.copy("app", "dev", to_repository="app", target=dst)
        assert digest == image.digest
        assert dst.counts.blob_uploads == 3
        assert dst.counts.bytes_uploaded == sum(len(b) for b in source.blobs.values())
    assert target.manifests[("app", image.digest)][0] == image.raw
    assert target.tags[("app", "dev")] == image.digest
    last = target.requests[-1]
    assert (last.method, last.url.path) == ("PUT", "/v2/app/manifests/dev")


def test_copy_skips_blobs_the_target_already_has() -> None:
    source, target = FakeRegistry(), FakeRegistry()
    source.push_image("app", "dev", [b"l1"])
    target.push_image("app", "old", [b"l1", b"l3"])  # same first layer, other config
    with client_for(source) as src, client_for(target, "other.test") as dst:
        src.copy("app", "dev", to_repository="app", target=dst)
        assert dst.counts.blob_uploads == 1  # only the config


def test_copy_of_an_index_copies_each_child_first() -> None:
    source, target = FakeRegistry(), FakeRegistry()
    amd = source.push_image("app", "amd", [b"amd"])
    arm = source.push_image("app", "arm", [b"arm"])
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": m.digest, "size": len(m.raw)}
                for m in (amd, arm)
            ],
        }
    ).encode()
    source.manifests[("app", sha(index))] = (index, OCI_INDEX)
    source.tags[("app", "multi")] = sha(index)
    with client_for(source) as src, client_for(target, "other.test") as dst:
        assert src.copy("app", "multi", to_repository="app", target=dst) == sha(index)
    puts = [r.url.path for r in target.requests if r.method == "PUT" and "manifests" in r.url.path]
    assert puts == [
        f"/v2/app/manifests/{amd.digest}",
        f"/v2/app/manifests/{arm.digest}",
        "/v2/app/manifests/multi",
    ]


def test_delete_tag_deletes_by_digest_and_takes_every_tag_along() -> None:
    fake = FakeRegistry()
    image = fake.push_image("app", "dev", [b"l"])
    fake.tags[("app", "staging")] = image.digest
    with client_for(fake) as client:
        assert client.delete_tag("app", "dev") == image.digest
        with pytest.raises(NotFoundError, match="app:staging"):
            client.resolve("app", "staging")
    delete = next(r for r in fake.requests if r.method == "DELETE")
    assert delete.url.path == f"/v2/app/manifests/{image.digest}"


def test_delete_manifest_wants_a_digest() -> None:
    with client_for(FakeRegistry()) as client, pytest.raises(UsageError, match="digest"):
        client.delete_manifest("app", "dev")


# -- auth ----------------------------------------------------------------------------------


def test_basic_auth_answers_the_challenge_then_sends_credentials_up_front() -> None:
    fake = FakeRegistry(auth="basic")
    fake.push_image("app", "dev", [b"l"])
    with client_for(fake, username="alice", password="secret") as client:
        client.resolve("app", "dev")
        client.resolve("app", "dev")
    assert [r.headers.get("Authorization") is not None for r in fake.requests] == [
        False,
        True,
        True,
    ]


def test_bearer_flow_gets_a_token_and_caches_it_per_scope() -> None:
    fake = FakeRegistry(auth="bearer")
    image = fake.push_image("app", "dev", [b"l"])
    with client_for(fake, username="alice", password="secret") as client:
        assert client.resolve("app", "dev") == image.digest
        assert client.get_manifest("app", "dev").digest == image.digest
    assert len(fake.token_requests) == 1
    token_request = fake.token_requests[0]
    assert token_request.url.params["service"] == "registry.test"
    assert token_request.url.params.get_list("scope") == ["repository:app:pull"]
    assert fake.requests[-1].headers["Authorization"] == "Bearer tok-1"


def test_bearer_token_for_a_new_scope_is_fetched_again() -> None:
    fake = FakeRegistry(auth="bearer")
    fake.push_image("app", "dev", [b"l"])
    with client_for(fake, username="alice", password="secret") as client:
        client.resolve("app", "dev")
        client.retag("app", "dev", "staging")  # push scope: a second token
    scopes = [r.url.params.get_list("scope") for r in fake.token_requests]
    assert scopes == [["repository:app:pull"], ["repository:app:pull,push", "repository:app:pull"]]


def test_first_requests_sent_together_each_answer_the_basic_challenge() -> None:
    # Both first requests leave before any challenge came back, so both go out bare. The
    # second 401 to arrive must not be read as "these credentials were refused".
    fake = FakeRegistry(auth="basic")
    fake.push_image("app", "dev", [b"l"])
    both_sent = threading.Barrier(2, timeout=10)

    def handler(request: httpx.Request) -> httpx.Response:
        if "Authorization" not in request.headers:
            both_sent.wait()
        return fake(request)

    client = RegistryClient(
        ENDPOINT, transport=httpx.MockTransport(handler), username="alice", password="secret"
    )
    with client, ThreadPoolExecutor(max_workers=2) as pool:
        digests = list(pool.map(lambda _: client.resolve("app", "dev"), range(2)))
    assert digests == [fake.tags[("app", "dev")]] * 2


def test_refused_credentials_are_permanent_and_not_retried() -> None:
    fake = FakeRegistry(auth="basic")
    client = client_for(fake, username="alice", password="wrong")
    with client, pytest.raises(PermanentError, match="refused the credentials of user 'alice'"):
        client.resolve("app", "dev")
    assert len(fake.requests) == 2  # the challenge, then one try with the credentials


def test_refused_token_request_is_permanent() -> None:
    fake = FakeRegistry(auth="bearer")
    client = client_for(fake, username="alice", password="wrong")
    with client, pytest.raises(PermanentError, match="refused the credentials"):
        client.ping()


def test_no_credentials_says_they_are_needed() -> None:
    fake = FakeRegistry(auth="basic")
    with client_for(fake) as client, pytest.raises(PermanentError, match="requires credentials"):
        client.ping()


# -- errors and retries --------------------------------------------------------------------


def test_transient_statuses_are_retried_then_succeed() -> None:
    fake = FakeRegistry(fail_next=[503, 429])
    image = fake.push_image("app", "dev", [b"l"])
    with client_for(fake) as client:
        assert client.resolve("app", "dev") == image.digest
    assert len(fake.requests) == 3


def test_persistent_5xx_becomes_retryable_naming_registry_and_operation() -> None:
    fake = FakeRegistry(fail_next=[500] * 10)
    with client_for(fake, retries=4) as client, pytest.raises(RetryableError) as caught:
        client.resolve("app", "dev")
    assert str(caught.value) == (
        "registry registry.test did not answer to resolve app:dev after 4 attempts: HTTP 500"
    )
    assert len(fake.requests) == 4


def read_only_for(fake: FakeRegistry, writes: int) -> Callable[[httpx.Request], httpx.Response]:
    """The fake, refusing its first ``writes`` writes as CNCF distribution's read-only
    maintenance mode does: 405, ``Allow: GET, HEAD``, a plain-text body."""
    left = [writes]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method not in ("GET", "HEAD") and left[0] > 0:
            left[0] -= 1
            fake.requests.append(request)
            return httpx.Response(405, headers={"Allow": "GET, HEAD"}, text="Method not allowed\n")
        return fake(request)

    return answer


def test_a_write_waits_out_a_read_only_registry_beyond_the_retry_count() -> None:
    fake = FakeRegistry()
    image = fake.push_image("app", "dev", [b"l"])
    with client_for(read_only_for(fake, 6), retries=2) as client:
        assert client.retag("app", "dev", "staging") == image.digest
    assert count(fake, "PUT", "/manifests/staging") == 7


def test_a_registry_read_only_for_too_long_is_a_retryable_error() -> None:
    fake = FakeRegistry()
    fake.push_image("app", "dev", [b"l"])
    client = client_for(read_only_for(fake, 10**6), retries=2, read_only_wait=0.05)
    with client, pytest.raises(RetryableError, match="the registry is read-only"):
        client.retag("app", "dev", "staging")


def test_a_registry_that_forbids_deletes_for_good_is_not_waited_for() -> None:
    def no_deletes(request: httpx.Request) -> httpx.Response:
        body = {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]}
        return httpx.Response(405, json=body)

    with client_for(no_deletes) as client, pytest.raises(PermanentError, match="UNSUPPORTED"):
        client.delete_manifest("app", DIGEST)


def test_connection_refused_keeps_its_cause() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = client_for(refuse, "127.0.0.1:5000", retries=2)
    with client, pytest.raises(RetryableError) as caught:
        client.resolve("app", "dev")
    assert "after 2 attempts: connection refused" in str(caught.value)
    assert "running" in (caught.value.hint or "")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


class CountingTransport(httpx.HTTPTransport):
    """httpx's real transport (real sockets), counting the requests it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


def test_a_manifest_check_asks_a_refused_port_once_and_the_other_calls_keep_retrying() -> None:
    # The deploy's image check goes on when the registry cannot tell: it must not wait
    # through the retries first (3.5 s of back-off by default). A real refused port: a
    # retry would be a second request here (and a wait of the back-off, 30 s, first).
    endpoint = f"127.0.0.1:{free_port()}"
    transport = CountingTransport()
    client = RegistryClient(endpoint, transport=transport, retries=4, backoff=30.0)
    with client, pytest.raises(RetryableError) as caught:
        client.has_manifest("app", DIGEST)
    assert str(caught.value) == (
        f"registry {endpoint} did not answer to look for app@{DIGEST} at its one attempt: "
        "connection refused"
    )
    assert transport.sent == [f"HEAD /v2/app/manifests/{DIGEST}"]
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    transport = CountingTransport()
    client = RegistryClient(endpoint, transport=transport, retries=3, backoff=0.001)
    with client, pytest.raises(RetryableError, match="after 3 attempts: connection refused"):
        client.resolve("app", "dev")  # what pushes and copies use: retried
    assert transport.sent == ["HEAD /v2/app/manifests/dev"] * 3


def test_a_manifest_check_gives_up_on_a_registry_that_accepts_and_never_answers_soon() -> None:
    # A registry that takes the connection and says nothing: the deploy's image check
    # waits its own check timeout (10 s; 0.5 s here), once, not the client's read timeout
    # made for blob transfers (30 s by default; 20 s here), and names the registry.
    with mute_endpoint() as mute:
        endpoint = mute.removeprefix("tcp://")
        transport = CountingTransport()
        client = RegistryClient(
            endpoint, transport=transport, retries=4, backoff=0.001, timeout=20.0,
            check_timeout=0.5,
        )  # fmt: skip
        started = time.monotonic()
        with client, pytest.raises(RetryableError) as caught:
            client.has_manifest("app", DIGEST)
        took = time.monotonic() - started
    assert str(caught.value) == (
        f"registry {endpoint} did not answer to look for app@{DIGEST} at its one attempt: "
        "timed out (ReadTimeout)"
    )
    assert transport.sent == [f"HEAD /v2/app/manifests/{DIGEST}"]
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert took < 20.0, took  # its own timeout (0.5 s), not the client's (20 s)


def test_a_manifest_check_says_present_or_absent_from_one_request() -> None:
    fake = FakeRegistry(auth="basic")
    image = fake.push_image("app", "dev", [b"l"])
    with client_for(fake, username="alice", password="secret") as client:
        assert client.has_manifest("app", image.digest) is True
        assert client.has_manifest("app", DIGEST) is False  # a 404 is a "no"
    # The first: its challenge, then with the login; the second with the login at once.
    assert count(fake, "HEAD", "/manifests/") == 3
    fake = FakeRegistry(fail_next=[503])
    image = fake.push_image("app", "dev", [b"l"])
    with client_for(fake) as client, pytest.raises(RetryableError, match="one attempt: HTTP 503"):
        client.has_manifest("app", image.digest)  # a 5xx: cannot tell, said at once
    assert len(fake.requests) == 1


def test_timeouts_are_retryable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with client_for(slow, retries=2) as client, pytest.raises(RetryableError, match="timed out"):
        client.ping()


def test_not_found_names_the_image_and_is_not_retried() -> None:
    fake = FakeRegistry()
    with client_for(fake) as client, pytest.raises(NotFoundError, match="image app:nope"):
        client.get_manifest("app", "nope")
    assert len(fake.requests) == 1


def test_other_4xx_carries_the_registry_message() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        error = {"errors": [{"code": "MANIFEST_INVALID", "message": "manifest invalid"}]}
        return httpx.Response(400, json=error)

    manifest = Manifest("sha256:" + "0" * 64, DOCKER_MANIFEST, b"{}")
    client = client_for(reject)
    with client, pytest.raises(PermanentError, match="MANIFEST_INVALID: manifest invalid"):
        client.put_manifest("app", "dev", manifest)


def test_bad_endpoint_and_half_credentials_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="endpoint"):
        RegistryClient("not a host")
    with pytest.raises(UsageError, match="both username and password"):
        RegistryClient("127.0.0.1:5000", username="alice")
