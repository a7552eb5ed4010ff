"""Build and push images through the Docker Engine API (the ``docker`` SDK lives only here).

Used by the default build: ``docker build`` of the stack's Dockerfile, then a push of each
tag to the registry. Engine errors become Stackyard errors at this boundary.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import docker.utils
import requests.exceptions

from stackyard import docker_sdk  # noqa: F401 - the SDK with its fix, before any client
from stackyard.errors import ComponentError, StackyardError
from stackyard.images.dockerfile_lines import STEP, step_place
from stackyard.images.push_retry import PUSH_RETRY_FOR, push_may_succeed_later
from stackyard.registry_login import RegistryLogin

LineSink = Callable[[str], None]


class BuildFailedError(StackyardError):
    """The Dockerfile build or the push failed; the message is the engine's own error."""


class DockerBuilder:
    """A thin, typed face over the engine's build, tag and push calls."""

    def __init__(self, base_url: str | None = None, *, timeout: int = 600) -> None:
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                self._client = docker.from_env(timeout=timeout)
            self._api = self._client.api
        except docker.errors.DockerException as exc:
            raise _engine_unreachable(exc) from exc

    def close(self) -> None:
        self._client.close()

    def build(
        self,
        context: Path,
        *,
        dockerfile: str,
        tags: list[str],
        network_mode: str,
        buildargs: dict[str, str] | None = None,
        on_line: LineSink,
    ) -> str:
        """Build ``context`` and tag the image with every tag; return the image id.

        The legacy builder takes a step's image from its cache by id and uses it a moment
        later; an image removal in between (retention, a deleted stack, another platform on
        the same engine) takes that cached image with it, and the build fails naming its id.
        Such a build runs once more: the step is then built, not taken from the cache."""
        if not tags:
            raise ValueError("build needs at least one tag")
        try:
            image_id = self._build_once(context, dockerfile, tags[0], network_mode, buildargs,
                                        on_line)  # fmt: skip
        except _CacheLostError as lost:
            on_line(f"the engine removed an image this build took from its cache ({lost}); "
                    "building again")  # fmt: skip
            image_id = self._build_once(context, dockerfile, tags[0], network_mode, buildargs,
                                        on_line, last_try=True)  # fmt: skip
        for tag in tags[1:]:
            repository, _, name = tag.rpartition(":")
            self._call(self._api.tag, image_id, repository, name)
        return image_id

    def _build_once(
        self,
        context: Path,
        dockerfile: str,
        tag: str,
        network_mode: str,
        buildargs: dict[str, str] | None,
        on_line: LineSink,
        *,
        last_try: bool = False,
    ) -> str:
        with _build_context(context, dockerfile) as tar:
            stream = self._call(
                self._api.build,
                fileobj=tar,
                custom_context=True,
                dockerfile=dockerfile,
                tag=tag,
                network_mode=network_mode,
                buildargs=buildargs or {},
                rm=True,
                forcerm=True,
                decode=True,
            )
        image_id = ""
        cached: list[str] = []  # short ids of the steps taken from the cache
        after_cache_hit = False
        step_line = ""  # the builder's last "Step N/M : INSTRUCTION"
        for chunk in self._chunks(stream):
            if "error" in chunk:
                error = chunk["error"].strip()
                if not last_try and _names_one_of(error, cached):
                    raise _CacheLostError(error)
                raise BuildFailedError(
                    f"docker build failed{_at(context, dockerfile, step_line)}: {error}"
                )
            text = chunk.get("stream", "")
            for line in text.splitlines():
                if not line.strip():
                    continue
                on_line(line)
                step = line.strip()
                if STEP.match(step):
                    step_line = step
                if after_cache_hit and step.startswith("---> "):
                    cached.append(step.removeprefix("---> ").strip())
                after_cache_hit = step == "---> Using cache"
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = str(aux["ID"])
        return image_id or self.image_id(tag)

    def push(
        self,
        repository: str,
        tag: str,
        *,
        auth: RegistryLogin,
        on_line: LineSink,
        retry_for: float = PUSH_RETRY_FOR,
    ) -> str | None:
        """Push ``repository:tag`` and return the manifest digest the engine reports (None if
        it reports none); raise BuildFailedError with the engine's message.

        A push the registry refuses for a while (read-only during its garbage collection,
        restarting, 5xx) is tried again for up to ``retry_for`` seconds; layers already
        sent are skipped by the engine.
        """
        deadline = time.monotonic() + retry_for
        pause = 0.5
        while True:
            try:
                return self._push_once(repository, tag, auth=auth, on_line=on_line)
            except BuildFailedError as exc:
                if not push_may_succeed_later(exc.message) or time.monotonic() >= deadline:
                    raise
                on_line(f"the registry refused the push for now; retrying in {pause:.1f} s")
                time.sleep(pause)
                pause = min(pause * 2, 4.0)

    def _push_once(
        self, repository: str, tag: str, *, auth: RegistryLogin, on_line: LineSink
    ) -> str | None:
        auth_config = {
            "username": auth.username,
            "password": auth.password,
            "serveraddress": auth.registry,
        }
        stream = self._call(
            self._api.push, repository, tag=tag, auth_config=auth_config, stream=True, decode=True
        )
        digest = None
        for chunk in self._chunks(stream):
            if "error" in chunk:
                raise BuildFailedError(f"docker push {repository}:{tag} failed: {chunk['error']}")
            status = chunk.get("status")
            if status and not chunk.get("progressDetail"):
                ident = chunk.get("id")
                on_line(f"{ident}: {status}" if ident else str(status))
            aux = chunk.get("aux")
            if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                digest = str(aux["Digest"])
        return digest

    def image_id(self, reference: str) -> str:
        inspected = self._call(self._api.inspect_image, reference)
        return str(inspected["Id"])

    def untag(self, reference: str) -> None:
        """Drop one tag; the image and its layers (the build cache) stay."""
        try:
            self._api.remove_image(reference, force=False, noprune=True)
        except docker.errors.ImageNotFound:
            return
        except docker.errors.DockerException as exc:
            raise _translate(exc) from exc

    def prune(self, repository: str) -> list[str]:
        """Drop this repository's untagged images from the engine: older builds and images
        of releases no task runs any more. The registry keeps every one of them (a rollback
        pulls it back), and an image a container still uses is left alone. Returns the
        references removed.

        Untagged means no tag in *this* repository: the engine's own ``dangling`` filter
        would miss an image whose identical content another repository (another stack, or
        another registry's name for it) still tags, and its old digest reference here
        would stay for ever."""
        images = self._call(self._api.images, name=repository)
        untagged = [
            image
            for image in images
            if not any(str(t).startswith(f"{repository}:") for t in image.get("RepoTags") or [])
        ]
        return self._remove_references(untagged, ("RepoDigests",), (f"{repository}@",))

    def remove_repository(self, repository: str) -> list[str]:
        """Drop every tag and digest reference of ``repository`` from the engine (the stack
        was deleted); an image another repository shares stays. Returns what went."""
        images = self._call(self._api.images, name=repository)
        fields, prefixes = ("RepoTags", "RepoDigests"), (f"{repository}:", f"{repository}@")
        return self._remove_references(images, fields, prefixes)

    def _remove_references(
        self, images: list[dict[str, Any]], fields: tuple[str, ...], prefixes: tuple[str, ...]
    ) -> list[str]:
        """Remove the references (from the images' ``fields``) that start with ``prefixes``;
        an image goes with its last reference. Returns the ones removed."""
        removed = []
        for image in images:
            for reference in (str(r) for name in fields for r in image.get(name) or []):
                if reference.startswith(prefixes) and self.remove_reference(reference):
                    removed.append(reference)
        return removed

    def images_named(self, *registries: str) -> list[tuple[str, tuple[str, ...]]]:
        """``(image id, references)`` of every image with a tag or digest reference under
        ``registry/`` of one of ``registries`` (all its references, ours and others)."""
        prefix = tuple(f"{registry}/" for registry in registries)
        found = []
        for image in self._call(self._api.images):
            references = tuple(
                str(r)
                for name in ("RepoTags", "RepoDigests")
                for r in image.get(name) or []
                if str(r) != "<none>:<none>" and str(r) != "<none>@<none>"
            )
            if any(r.startswith(prefix) for r in references):
                found.append((str(image["Id"]), references))
        return found

    def remove_reference(self, reference: str) -> bool:
        """Drop one reference (the image goes with its last one); False when a container
        uses the image or the reference is gone already."""
        try:
            self._api.remove_image(reference, force=False, noprune=False)
        except docker.errors.APIError:
            return False
        except docker.errors.DockerException as exc:
            raise _translate(exc) from exc
        return True

    def unique_bytes(self, image_ids: set[str]) -> int:
        """The bytes only these images hold (layers shared with any other image, such as a
        base image, are not counted), from the engine's disk usage report."""
        if not image_ids:
            return 0
        usage = self._call(self._api.df)
        return sum(
            max(0, int(image.get("Size", 0)) - max(0, int(image.get("SharedSize", 0))))
            for image in usage.get("Images") or []
            if image.get("Id") in image_ids
        )

    def remove_image(self, reference: str) -> None:
        try:
            self._api.remove_image(reference, force=True, noprune=False)
        except docker.errors.ImageNotFound:
            return
        except docker.errors.DockerException as exc:
            raise _translate(exc) from exc

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Send one request. A request the engine (or the build proxy in front of it) closed
        the connection on without answering is sent once more on a fresh connection: the SDK
        reuses kept-alive connections, and one closed just as it was reused never reached
        the engine. Every call here is safe to repeat (a build is its own cache)."""
        try:
            return self._send(method, *args, **kwargs)
        except _NoAnswerError:
            self._api.close()  # drop the pooled connections; the next request opens a new one
            body = kwargs.get("fileobj")
            if body is not None:
                body.seek(0)  # a build context is sent again from its start
            return self._send(method, *args, retried=True, **kwargs)

    def _send(
        self, method: Callable[..., Any], *args: Any, retried: bool = False, **kwargs: Any
    ) -> Any:
        try:
            return method(*args, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            if not retried:
                raise _NoAnswerError(str(exc)) from exc
            raise _engine_unreachable(exc) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _translate(exc) from exc

    def _chunks(self, stream: Any) -> Iterator[dict[str, Any]]:
        try:
            yield from stream
        except (docker.errors.DockerException, OSError) as exc:
            raise _translate(exc) from exc


def _build_context(context: Path, dockerfile: str) -> IO[bytes]:
    """The build context as a tar file, ``.dockerignore`` applied as ``docker build`` does.
    Ours to close (the SDK leaves the one it makes open when the request fails), and to
    rewind when the request is sent again."""
    ignore = context / ".dockerignore"
    exclude = None
    if ignore.is_file():
        lines = (line.strip() for line in ignore.read_text(encoding="utf-8").splitlines())
        exclude = [line for line in lines if line and not line.startswith("#")]
    tar: IO[bytes] = docker.utils.tar(str(context), exclude=exclude, dockerfile=(dockerfile, None))
    return tar


def _at(context: Path, dockerfile: str, step_line: str) -> str:
    """`` at Dockerfile:6 (step 4/4: RUN false)``: where the failed step is; empty before
    the first step (the engine refused the file or its context)."""
    if not step_line:
        return ""
    try:
        text = (context / dockerfile).read_bytes()
    except OSError:
        text = b""
    return f" at {step_place(dockerfile, text, step_line)}"


class _CacheLostError(Exception):
    """An image the build took from its cache went before the build used it."""


def _names_one_of(error: str, short_ids: list[str]) -> bool:
    """Does the engine's ``error`` name (``sha256:<id>``) an image whose short id is listed?"""
    named = re.findall(r"sha256:([0-9a-f]{12,64})", error)
    return any(full.startswith(short) for full in named for short in short_ids if short)


class _NoAnswerError(Exception):
    """The connection closed before any answer came (never leaves this module)."""


def _translate(exc: Exception) -> StackyardError:
    if isinstance(exc, docker.errors.APIError):
        return BuildFailedError(f"the Docker engine refused: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.BuildError):
        return BuildFailedError(f"docker build failed: {exc.msg}")
    return _engine_unreachable(exc)


def _engine_unreachable(exc: Exception) -> ComponentError:
    return ComponentError(
        f"the Docker engine did not answer: {exc}",
        hint="start it (scripts/setup-host does), or set DOCKER_HOST; then build again",
    )
