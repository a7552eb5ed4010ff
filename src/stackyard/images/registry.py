"""OCI distribution API client: resolve, read, retag, copy, list and delete images.

Release and promotion code calls ``RegistryClient``; it speaks plain HTTP (httpx) to the
embedded registry or to any OCI registry (ECR, GHCR, Harbor, Docker Hub). A retag copies
the manifest bytes exactly, so a promoted tag has the very same digest and no layer moves.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx

from stackyard.errors import NotFoundError, PermanentError, RetryableError, UsageError
from stackyard.images.registry_auth import RegistryAuth, TokenRefused

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 30.0
CHUNK = 1 << 20

T = TypeVar("T")

# The reference grammar of CNCF distribution (reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")


# -- records -------------------------------------------------------------------------------


def is_digest(reference: str) -> bool:
    return _DIGEST.fullmatch(reference) is not None


@dataclass(frozen=True)
class ManifestRef:
    """A manifest inside one registry: a repository and a tag or digest."""

    repository: str
    reference: str

    def __str__(self) -> str:
        sep = "@" if is_digest(self.reference) else ":"
        return f"{self.repository}{sep}{self.reference}"


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry served it; ``raw`` is never re-serialised."""

    digest: str
    media_type: str
    raw: bytes

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    def _document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.raw)
        except ValueError as exc:
            raise PermanentError(f"manifest {self.digest} is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise PermanentError(f"manifest {self.digest} is not a JSON object")
        return document

    def children(self) -> list[str]:
        """Digests of the manifests an index (manifest list) points at; [] for an image."""
        if not self.is_index:
            return []
        return [entry["digest"] for entry in self._document().get("manifests", [])]

    def blobs(self) -> list[str]:
        """Digests of the config blob and the layers an image manifest needs, in that order."""
        if self.is_index:
            return []
        document = self._document()
        descriptors = [document["config"]] if "config" in document else []
        # Foreign (non-distributable) layers live elsewhere and are never copied.
        descriptors += [
            layer
            for layer in document.get("layers", [])
            if "foreign" not in layer.get("mediaType", "")
            and "nondistributable" not in layer.get("mediaType", "")
        ]
        return [descriptor["digest"] for descriptor in descriptors]


@dataclass(frozen=True)
class ImageReference:
    """``[registry/]repository[:tag][@digest]``, validated like Docker does."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """The digest when there is one (it pins the image), else the tag, else latest."""
        return self.digest or self.tag or "latest"

    @property
    def manifest_ref(self) -> ManifestRef:
        return ManifestRef(self.repository, self.reference)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """Parse an image reference; a bad one raises UsageError naming the bad part."""
        if not text or text != text.strip():
            raise UsageError(f"bad image reference {text!r}: it is empty or has spaces")
        name, digest = text, None
        if "@" in text:
            name, _, digest = text.partition("@")
            if not is_digest(digest):
                raise UsageError(
                    f"bad image reference {text!r}: digest {digest!r} is not algorithm:hex",
                    hint="a digest looks like sha256:<64 hex characters>",
                )
        registry, path = None, name
        first, slash, rest = name.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
            if not _HOST.fullmatch(registry):
                raise UsageError(f"bad image reference {text!r}: registry host {registry!r}")
        tag = None
        last_slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > last_slash:
            path, tag = path[:colon], path[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise UsageError(
                    f"bad image reference {text!r}: tag {tag!r} is not valid",
                    hint="a tag is up to 128 letters, digits, '_', '.' or '-', not starting "
                    "with '.' or '-'",
                )
        if not _REPOSITORY.fullmatch(path):
            raise UsageError(
                f"bad image reference {text!r}: repository {path!r} is not valid",
                hint="a repository is lower-case letters, digits and separators (. _ - /)",
            )
        return cls(registry, path, tag, digest)


# -- the client ----------------------------------------------------------------------------


class _Transient(Exception):
    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


def default_scheme(endpoint: str) -> str:
    """http for loopback registries (as Docker trusts them), https for everything else."""
    host = endpoint.rsplit("]", 1)[0].lstrip("[") if endpoint.startswith("[") else endpoint
    host = host.split(":")[0] if not endpoint.startswith("[") else host
    if host == "localhost":
        return "http"
    try:
        return "http" if ipaddress.ip_address(host).is_loopback else "https"
    except ValueError:
        return "https"


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        return "connection refused" if "refused" in text else f"cannot connect ({exc})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


def _error_messages(response: httpx.Response) -> str:
    """The registry's own error text: ``errors[].code: message``, else the body's start."""
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return "; ".join(
            f"{e.get('code', '?')}: {e.get('message', '')}".strip(": ")
            for e in body["errors"]
            if isinstance(e, dict)
        )
    try:
        return response.text[:200].strip()
    except httpx.ResponseNotRead:
        return ""


def _status_text(response: httpx.Response) -> str:
    """``HTTP 500 (UNKNOWN: ...)``, the registry's message only when it sent one."""
    messages = _error_messages(response)
    return f"HTTP {response.status_code}" + (f" ({messages})" if messages else "")


class RegistryClient:
    """One registry endpoint, e.g. ``127.0.0.1:5000`` or ``ghcr.io``.

    Transient failures (refused, timeouts, 5xx, 429) are retried ``retries`` times in all
    with exponential backoff from ``backoff`` seconds, then raised as RetryableError;
    401/403/404/other 4xx raise at once. Counters (``blob_uploads``, ``blob_mounts``,
    ``bytes_uploaded``, ``manifest_puts``) say what the client moved.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        username: str | None = None,
        password: str | None = None,
        scheme: str | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if "://" in endpoint:
            given, _, endpoint = endpoint.partition("://")
            scheme = scheme or given
        endpoint = endpoint.rstrip("/")
        if endpoint == "docker.io":
            endpoint = "registry-1.docker.io"
        if not endpoint or not _HOST.fullmatch(endpoint):
            raise UsageError(f"bad registry endpoint {endpoint!r}: expected host[:port]")
        scheme = scheme or default_scheme(endpoint)
        if scheme not in ("http", "https"):
            raise UsageError(f"bad registry scheme {scheme!r}: use http or https")
        if retries < 1:
            raise UsageError(f"retries must be at least 1, not {retries}")
        self.endpoint = endpoint
        self.scheme = scheme
        self.base_url = f"{scheme}://{endpoint}"
        self.retries = retries
        self.backoff = backoff
        try:
            self._auth = RegistryAuth(username, password)
        except ValueError as exc:
            raise UsageError(f"registry {endpoint}: {exc}") from exc
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            follow_redirects=True,  # blob GETs redirect to object storage on ECR, GHCR, Hub
            headers={"User-Agent": "stackyard"},
        )
        self.blob_uploads = 0
        self.blob_mounts = 0
        self.bytes_uploaded = 0
        self.manifest_puts = 0

    # -- lifecycle

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading

    def ping(self) -> None:
        """Check that the registry answers the v2 API and accepts the credentials."""
        self._request("GET", "/v2/", operation="ping", scopes=())

    def resolve(self, repository: str, reference: str) -> str:
        """The digest a tag (or digest) points at: HEAD, falling back to hashing the body."""
        ref = ManifestRef(repository, reference)
        response = self._request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            operation=f"resolve {ref}",
            scopes=(_pull(repository),),
            headers={"Accept": ACCEPT},
            missing=f"image {ref}",
        )
        digest: str | None = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        return self.get_manifest(repository, reference).digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest as raw bytes with its media type and digest."""
        ref = ManifestRef(repository, reference)
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            operation=f"get manifest {ref}",
            scopes=(_pull(repository),),
            headers={"Accept": ACCEPT},
            missing=f"image {ref}",
        )
        raw = response.content
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        digest = response.headers.get("Docker-Content-Digest") or computed
        if is_digest(reference) and reference.startswith("sha256:") and reference != computed:
            raise PermanentError(
                f"registry {self.endpoint} served {ref} with digest {computed}, "
                "not the one asked for; refusing to use it"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES:
            media_type = _media_type_in(raw) or media_type
        return Manifest(digest=digest, media_type=media_type, raw=raw)

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of a repository, following the ``Link: rel="next"`` pages."""
        return self._paged(
            f"/v2/{repository}/tags/list",
            "tags",
            operation=f"list tags of {repository}",
            scopes=(_pull(repository),),
            page_size=page_size,
            missing=f"repository {repository}",
        )

    def list_repositories(self, *, page_size: int | None = None) -> list[str]:
        """The registry's catalog (registries like Docker Hub and GHCR do not offer it)."""
        return self._paged(
            "/v2/_catalog",
            "repositories",
            operation="list repositories",
            scopes=("registry:catalog:*",),
            page_size=page_size,
            missing="the catalog endpoint",
        )

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            operation=f"check blob {digest} in {repository}",
            scopes=(_pull(repository),),
            allow={404},
        )
        return response.status_code == 200

    # -- writing

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """PUT the exact bytes with their media type; returns the digest the registry reports."""
        ref = ManifestRef(repository, reference)
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            operation=f"put manifest {ref}",
            scopes=(_push(repository),),
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
        )
        self.manifest_puts += 1
        return response.headers.get("Docker-Content-Digest") or manifest.digest

    def retag(self, repository: str, source: str, tag: str) -> str:
        """Point ``tag`` at what ``source`` (a tag or digest) points at; no blob moves.

        Returns the digest, which is the source's digest because the bytes are the same.
        """
        manifest = self.get_manifest(repository, source)
        digest = self.put_manifest(repository, tag, manifest)
        if digest != manifest.digest:
            raise PermanentError(
                f"registry {self.endpoint} stored {repository}:{tag} as {digest}, "
                f"not {manifest.digest}: it rewrote the manifest"
            )
        return digest

    def copy(
        self,
        repository: str,
        reference: str,
        *,
        to_repository: str,
        to_reference: str | None = None,
        target: RegistryClient | None = None,
    ) -> str:
        """Copy an image (or an index with all its images) to another repository/registry.

        Blobs are mounted when both sides are the same registry and streamed otherwise;
        blobs the target already has are skipped. Returns the manifest digest.
        """
        destination = target or self
        manifest = self.get_manifest(repository, reference)
        for child in manifest.children():
            child_manifest = self.get_manifest(repository, child)
            self._copy_blobs(child_manifest, repository, destination, to_repository)
            destination.put_manifest(to_repository, child, child_manifest)
        self._copy_blobs(manifest, repository, destination, to_repository)
        final = to_reference or (reference if not is_digest(reference) else manifest.digest)
        return destination.put_manifest(to_repository, final, manifest)

    def delete_tag(self, repository: str, tag: str) -> str:
        """Delete the manifest ``tag`` points at, and return its digest.

        CNCF distribution deletes by digest only, so EVERY tag that points at the same
        digest disappears with it. Move the other tags first if they must stay.
        """
        digest = self.resolve(repository, tag)
        self.delete_manifest(repository, digest)
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (all its tags go with it); blobs stay until GC."""
        if not is_digest(digest):
            raise UsageError(f"delete_manifest needs a digest, not {digest!r}")
        ref = ManifestRef(repository, digest)
        self._request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            operation=f"delete {ref}",
            scopes=(f"repository:{repository}:delete", _push(repository)),
            missing=f"image {ref}",
        )

    # -- blob moves

    def _copy_blobs(
        self, manifest: Manifest, repository: str, target: RegistryClient, to_repository: str
    ) -> None:
        same_registry = target.base_url == self.base_url
        for digest in manifest.blobs():
            if same_registry and repository == to_repository:
                continue  # already there: the manifest was read from this very repository
            if target.blob_exists(to_repository, digest):
                continue
            if same_registry and target._mount(to_repository, digest, repository):
                continue
            self._stream_blob(repository, digest, target, to_repository)

    def _mount(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; False when the registry started an upload instead."""
        response = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            operation=f"mount blob {digest} into {repository}",
            scopes=(_push(repository), _pull(from_repository)),
            params={"mount": digest, "from": from_repository},
        )
        if response.status_code == 201:
            self.blob_mounts += 1
            return True
        self.blob_uploads += 1
        location = response.headers.get("Location")
        if location:  # an unused upload session: cancel it rather than leave it to expire
            self._request(
                "DELETE",
                urljoin(self.base_url + "/", location),
                operation=f"cancel upload into {repository}",
                scopes=(_push(repository),),
                allow={404},
            )
        return False

    def _stream_blob(
        self, repository: str, digest: str, target: RegistryClient, to_repository: str
    ) -> None:
        operation = f"copy blob {digest} from {repository} to {target.endpoint}/{to_repository}"
        self._retrying(
            operation,
            lambda: self._stream_blob_once(repository, digest, target, to_repository, operation),
        )

    def _stream_blob_once(
        self,
        repository: str,
        digest: str,
        target: RegistryClient,
        to_repository: str,
        operation: str,
    ) -> None:
        start = target._send_once(
            "POST", f"/v2/{to_repository}/blobs/uploads/", scopes=(_push(to_repository),)
        )
        target._check(start, operation, missing=f"repository {to_repository}")
        target.blob_uploads += 1
        location = urljoin(target.base_url + "/", start.headers["Location"])
        source_url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        scopes = (_pull(repository),)
        # A HEAD first answers any auth challenge, so the streamed GET goes out authorised.
        probe = self._send_once("HEAD", source_url, scopes=scopes)
        self._check(probe, operation, missing=f"blob {digest} in {repository}")
        with self._http.stream("GET", source_url, headers=self._auth.headers(scopes)) as source:
            self._upload_from(source, target, location, digest, to_repository, operation)

    def _upload_from(
        self,
        source: httpx.Response,
        target: RegistryClient,
        location: str,
        digest: str,
        to_repository: str,
        operation: str,
    ) -> None:
        if source.status_code in RETRY_STATUSES:
            raise _Transient(f"HTTP {source.status_code} reading the blob")
        if source.status_code != 200:
            source.read()
            self._check(source, operation, missing=f"blob {digest}")
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            for chunk in source.iter_bytes(CHUNK):
                sent += len(chunk)
                yield chunk

        scopes = (_push(to_repository),)
        headers = {**target._auth.headers(scopes), "Content-Type": "application/octet-stream"}
        try:
            patch = target._http.patch(location, content=body(), headers=headers)
        except httpx.TransportError as exc:
            raise _Transient(_describe(exc), exc) from exc
        target._check(patch, operation)
        location = urljoin(target.base_url + "/", patch.headers.get("Location", location))
        # The upload URL carries state in its query; add the digest to it, do not replace it.
        finish = str(httpx.URL(location).copy_merge_params({"digest": digest}))
        done = target._send_once("PUT", finish, scopes=scopes)
        target._check(done, operation)
        target.bytes_uploaded += sent

    # -- HTTP plumbing

    def _paged(
        self,
        path: str,
        key: str,
        *,
        operation: str,
        scopes: tuple[str, ...],
        page_size: int | None,
        missing: str,
    ) -> list[str]:
        items: list[str] = []
        url: str | None = path
        params = {"n": str(page_size)} if page_size else None
        while url is not None:
            response = self._request(
                "GET", url, operation=operation, scopes=scopes, params=params, missing=missing
            )
            params = None  # the next link carries its own query
            items += response.json().get(key) or []
            next_url = response.links.get("next", {}).get("url")
            url = urljoin(self.base_url + "/", next_url) if next_url else None
        return items

    def _request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        missing: str | None = None,
        allow: frozenset[int] | set[int] = frozenset(),
    ) -> httpx.Response:
        """Send with auth and retries; return a 2xx (or allowed) response, else raise."""
        response = self._retrying(
            operation,
            lambda: self._send_once(
                method, path, scopes=scopes, headers=headers, params=params, content=content
            ),
        )
        if response.status_code in allow:
            return response
        self._check(response, operation, missing=missing)
        return response

    def _retrying(self, operation: str, attempt: Callable[[], T]) -> T:
        last: _Transient | None = None
        for number in range(1, self.retries + 1):
            try:
                return attempt()
            except _Transient as transient:
                last = transient
            if number < self.retries:
                time.sleep(min(self.backoff * 2 ** (number - 1), MAX_BACKOFF))
        reason = last.reason if last else "no attempt made"
        raise RetryableError(
            f"registry {self.endpoint} did not answer to {operation} "
            f"after {self.retries} attempts: {reason}",
            hint=f"is the registry at {self.base_url} running and reachable?",
        ) from (last.cause if last else None)

    def _send_once(
        self,
        method: str,
        path: str,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """One request plus, on a 401 challenge, one authenticated retry."""
        url = path if "://" in path else self.base_url + path
        base_headers = dict(headers or {})

        def send(extra: dict[str, str]) -> httpx.Response:
            try:
                response = self._http.request(
                    method, url, headers={**base_headers, **extra}, params=params, content=content
                )
            except httpx.TransportError as exc:
                raise _Transient(_describe(exc), exc) from exc
            if response.status_code in RETRY_STATUSES:
                raise _Transient(_status_text(response))
            return response

        response = send(self._auth.headers(scopes))
        challenge = response.headers.get("WWW-Authenticate")
        if response.status_code != 401 or not challenge:
            return response
        try:
            retry_headers = self._auth.answer(challenge, scopes, self._fetch_token)
        except TokenRefused as refused:
            return refused.response
        return response if retry_headers is None else send(retry_headers)

    def _fetch_token(
        self, realm: str, params: list[tuple[str, str]], headers: dict[str, str]
    ) -> httpx.Response:
        try:
            response = self._http.get(realm, params=tuple(params), headers=headers)
        except httpx.TransportError as exc:
            raise _Transient(f"token service {realm}: {_describe(exc)}", exc) from exc
        if response.status_code in RETRY_STATUSES:
            raise _Transient(f"token service {realm} answered HTTP {response.status_code}")
        return response

    def _check(
        self, response: httpx.Response, operation: str, *, missing: str | None = None
    ) -> None:
        status = response.status_code
        if status < 400:
            return
        where = f"registry {self.endpoint}"
        if status == 401:
            if self._auth.has_credentials:
                raise PermanentError(
                    f"{where} refused the credentials of user {self._auth.username!r} "
                    f"to {operation}",
                    hint="check the registry username and password",
                )
            raise PermanentError(
                f"{where} requires credentials to {operation}",
                hint="give the registry username and password",
            )
        if status == 404:
            what = missing or operation
            raise NotFoundError(
                f"{what} not found in {where}",
                hint="check the repository, tag or digest; list tags to see what exists",
            )
        if status == 403:
            raise PermanentError(
                f"{where} denied access to {operation}: {_status_text(response)}",
                hint="the credentials lack permission for this repository",
            )
        raise PermanentError(f"{where} rejected {operation}: {_status_text(response)}")


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _media_type_in(raw: bytes) -> str | None:
    try:
        value = json.loads(raw).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
