"""The build proxy reads a legacy build's Dockerfile from its streamed context and judges
every image it names: attacks that name another stack's local image, and the readings
(ARGs, stages, flags, links, compression) that must match the builder's."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import tarfile
from typing import Any

import pytest

from stackyard.images.dockerproxy.context import BuildContext, ContextReader
from stackyard.images.dockerproxy.dockerfile import (
    DockerfileError,
    NamedImage,
    expand,
    named_images,
    trigger_images,
)
from stackyard.images.dockerproxy.rules import (
    ApiRequest,
    BuildScope,
    Forward,
    build_args,
    decide,
    dockerfile_refusal,
    unreadable_name,
)

REGISTRY = "127.0.0.1:5000"
SCOPE = BuildScope("shop", REGISTRY, cgroup_parent="/docker/abc")
VICTIM_ID = "sha256:" + "ab" * 32
VICTIM = {"Id": VICTIM_ID, "RepoTags": [f"{REGISTRY}/victim:latest"],
          "RepoDigests": [f"{REGISTRY}/victim@sha256:" + "cd" * 32]}  # fmt: skip
BASE = {"Id": "sha256:" + "12" * 32, "RepoTags": ["busybox:latest"], "RepoDigests": []}
OWN = {"Id": "sha256:" + "34" * 32, "RepoTags": [f"{REGISTRY}/shop:v1"], "RepoDigests": []}
NAMELESS = {"Id": "sha256:" + "56" * 32, "RepoTags": [], "RepoDigests": []}


def images(text: str, **args: str | None) -> list[str]:
    return [found.name for found in named_images(text.encode(), args)]


# -- which images a Dockerfile names ----------------------------------------------------------


def test_every_from_copy_from_and_mount_from_is_an_image_unless_it_is_a_stage() -> None:
    text = (
        "FROM busybox:latest AS build\n"
        "RUN --mount=type=bind,from=127.0.0.1:5000/victim:latest,target=/v true\n"
        "FROM build\n"
        "COPY --from=build /a /a\n"
        "COPY --from=0 /b /b\n"
        "COPY --from=sha256:" + "ab" * 32 + " /c /c\n"
        "COPY --chown=1:1 --from='python:3.11-slim' /d /d\n"
        "FROM scratch\n"
        "RUN --mount=from=build,target=/x --mount=type=cache,target=/c true\n"
    )
    assert images(text) == [
        "busybox:latest",
        "127.0.0.1:5000/victim:latest",
        "sha256:" + "ab" * 32,
        "python:3.11-slim",
    ]


def test_a_stage_name_counts_only_after_its_stage_began() -> None:
    text = "FROM busybox AS a\nCOPY --from=a /x /x\nFROM later\nFROM busybox AS later\n"
    assert images(text) == ["busybox", "a", "later", "busybox"]


def test_from_takes_global_args_their_defaults_build_args_and_the_builder_s_modifiers() -> None:
    text = (
        "ARG REG=docker.io\n"
        'ARG NAME="library/busybox" TAG\n'
        "ARG EMPTY\n"
        "FROM ${REG}/$NAME:${TAG:-latest}\n"
        "FROM ${EMPTY:-127.0.0.1:5000/victim}${TAG:+:$TAG}\n"
        "ARG LATE=ignored\n"
        "FROM $LATE\n"
    )
    with pytest.raises(DockerfileError, match=r"line 7 .*empty image"):
        images(text)  # an ARG after the first FROM is not global: $LATE is empty
    text = text.rsplit("ARG LATE", 1)[0]
    assert images(text) == ["docker.io/library/busybox:latest", "127.0.0.1:5000/victim"]
    assert images(text, TAG="v2", NAME="x/y") == [
        "docker.io/x/y:v2",
        "127.0.0.1:5000/victim:v2",
    ]
    assert images(text, TAG=None) == images(text)  # a null build-arg is unset


def test_the_lexer_reads_quotes_escapes_and_refuses_what_the_builder_refuses() -> None:
    variables = {"A": "x", "E": ""}
    assert expand("'$A'\"$A\"\\$A", variables) == "$Ax$A"
    assert expand("${E:-${A}y}", variables) == "xy"
    assert expand("${A:+set}${E:+no}", variables) == "set"
    assert expand("$1$", variables) == "$"
    for bad in ("${A?x}", "${A:=x}", "${A", "'open", '"open'):
        with pytest.raises(DockerfileError):
            expand(bad, variables)


def test_continuations_comments_the_escape_directive_and_a_bom_are_read_as_the_builder_does() -> (
    None
):
    text = (
        "\ufeff# escape=`\n"
        "FROM busybox:latest\n"
        "COPY `\n"
        "  # a comment inside\n"
        "  --from=127.0.0.1:5000/victim:latest /a /a\n"
        "run echo \\\n"
        "FROM not-an-instruction\n"
    )
    found = named_images(text.encode(), {})
    assert [(f.line, f.kind, f.name) for f in found] == [
        (2, "FROM", "busybox:latest"),
        (3, "COPY --from", "127.0.0.1:5000/victim:latest"),
        (7, "FROM", "not-an-instruction"),  # a backslash does not continue under `
    ]
    assert found[1].text == "COPY ` --from=127.0.0.1:5000/victim:latest /a /a"


def test_lines_join_where_the_builder_joins_them() -> None:
    # The builder skips a blank line inside a continuation: the flag is still COPY's.
    assert images("FROM busybox\nCOPY \\\n  \n--from=127.0.0.1:5000/v:1 / /\n") == [
        "busybox",
        "127.0.0.1:5000/v:1",
    ]
    # A backslash and a vertical tab end a line for the builder: the next is an instruction.
    assert images("FROM busybox\nRUN true \\\x0b\nCOPY --from=127.0.0.1:5000/v:1 / /\n") == [
        "busybox",
        "127.0.0.1:5000/v:1",
    ]
    assert images("FROM busybox\r\nRUN true \\ \t\r\nCOPY --from=x:1 / /\r\n") == ["busybox"]
    # Directives count at the top only, a syntax directive among them (measured).
    after = "FROM busybox\nRUN true `\nCOPY --from=v:1 / /\n"
    assert images("# syntax=x\n# ESCAPE = `\n" + after) == ["busybox"]
    assert images("# hello\n# escape=`\n" + after) == ["busybox", "v:1"]
    assert images("# other=x\n# escape=`\n" + after) == ["busybox", "v:1"]


def test_a_broken_from_names_its_line() -> None:
    with pytest.raises(DockerfileError, match=r"line 2 .*FROM takes an image"):
        named_images(b"# hi\nFROM a b\n", {})
    for name in ("../../containers/x", "a?b", "x/%2e%2e/y", "a//b"):
        with pytest.raises(DockerfileError, match="is not an image name"):
            named_images(f"FROM busybox\nCOPY --from={name} / /\n".encode(), {})


def test_onbuild_triggers_of_a_base_image_are_read_with_its_stage() -> None:
    base = NamedImage(3, "FROM mine:v1", "FROM", "mine:v1", ("build",))
    triggers = ["COPY --from=127.0.0.1:5000/victim:latest / /", "COPY --from=build / /", "RUN x"]
    found = trigger_images(triggers, base)
    assert [(f.line, f.name) for f in found] == [(3, "127.0.0.1:5000/victim:latest")]
    assert "ONBUILD COPY --from=127.0.0.1:5000/victim:latest" in found[0].text


# -- judging each image -----------------------------------------------------------------------


def refusal_of(name: str, image: dict[str, Any] | None) -> str | None:
    named = NamedImage(4, f"FROM {name}", "FROM", name)
    refusal = dockerfile_refusal("Dockerfile", named, image, SCOPE, {"evil-base:latest": "evil"})
    return None if refusal is None else refusal.message


@pytest.mark.parametrize(
    ("name", "image"),
    [
        (f"{REGISTRY}/victim@sha256:" + "cd" * 32, VICTIM),  # by digest
        (f"{REGISTRY}/victim:gone", None),  # by name, not even held
        (VICTIM_ID, VICTIM),  # by id
        ("abababababab", VICTIM),  # by short id
        ("evil-base", {"Id": "x", "RepoTags": ["evil-base:latest"]}),  # another's build
        ("sha256:" + "56" * 32, NAMELESS),  # nobody's name: whose cannot be told
    ],
)
def test_another_stack_s_local_image_is_refused_naming_the_line(
    name: str, image: dict[str, Any] | None
) -> None:
    message = refusal_of(name, image)
    assert message is not None
    assert message.startswith("Stackyard's build proxy refused the build: Dockerfile line 4")
    assert f"(FROM {name}) reads {name}" in message


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("busybox:latest", BASE),
        (BASE["Id"], BASE),
        (f"{REGISTRY}/shop:v1", OWN),
        (OWN["Id"], OWN),
        ("python:3.13-slim", None),  # pulled by the engine, without the platform's logins
        # A stack whose image adds nothing to busybox has busybox's very image.
        ("busybox:latest", {**BASE, "RepoTags": ["busybox:latest", f"{REGISTRY}/victim:v1"]}),
    ],
)
def test_base_images_and_the_stack_s_own_are_read(name: str, image: dict[str, Any] | None) -> None:
    assert refusal_of(name, image) is None


def test_an_image_this_build_made_is_read_though_it_has_no_name() -> None:
    named = NamedImage(2, f"FROM {NAMELESS['Id']}", "FROM", str(NAMELESS["Id"]))
    built = {str(NAMELESS["Id"])}
    assert dockerfile_refusal("Dockerfile", named, NAMELESS, SCOPE, {}, built) is None
    assert dockerfile_refusal("Dockerfile", named, NAMELESS, SCOPE, {}) is not None


def test_a_name_the_engine_cannot_read_is_refused_naming_the_line() -> None:
    named = NamedImage(3, "FROM BusyBox:latest", "FROM", "BusyBox:latest")
    engine = "invalid reference format: repository name must be lowercase"
    message = unreadable_name("Dockerfile.web", named, engine).message
    assert message == (
        "Stackyard's build proxy refused the build: Dockerfile.web line 3 (FROM BusyBox:latest) "
        "names BusyBox:latest, which the engine cannot read as an image: " + engine
    )


def test_a_legacy_build_checks_its_dockerfile_and_a_buildkit_build_does_not() -> None:
    legacy = decide(ApiRequest("POST", "/build", {"dockerfile": [".dockerfile.abc"]}), SCOPE)
    assert isinstance(legacy, Forward)
    assert legacy.dockerfile == ".dockerfile.abc"
    default = decide(ApiRequest("POST", "/build", {}), SCOPE)
    assert isinstance(default, Forward)
    assert default.dockerfile == "Dockerfile"
    kit = decide(ApiRequest("POST", "/build", {"version": ["2"], "session": ["s1"]}), SCOPE, {"s1"})
    assert isinstance(kit, Forward)
    assert kit.dockerfile is None
    assert build_args({"buildargs": ['{"A": "1", "B": null}']}) == {"A": "1", "B": None}


# -- the context, as it streams past ----------------------------------------------------------


def tar_of(*members: tuple[str, bytes | str], pax_global: bool = False) -> bytes:
    """A tar of regular files (bytes) and symlinks (str: the target), in order."""
    buffer = io.BytesIO()
    headers = {"comment": "x"} if pax_global else None
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers=headers) as tar:  # fmt: skip
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def read(body: bytes, dockerfile: str = "", piece: int = 700) -> BuildContext:
    async def stream() -> BuildContext:
        reader = ContextReader(dockerfile)
        for start in range(0, len(body), piece):
            reader.feed(body[start : start + piece])
        return await reader.finish()

    return asyncio.run(stream())


HOSTILE = b"FROM 127.0.0.1:5000/victim:latest\n"
BENIGN = b"FROM busybox:latest\n"


def test_the_dockerfile_is_found_wherever_it_is_and_the_last_entry_of_a_name_wins() -> None:
    body = tar_of(("Dockerfile", BENIGN), ("src/app.py", b"x" * 5000), ("./Dockerfile", HOSTILE))
    assert read(body) == BuildContext(dockerfile=HOSTILE)
    assert read(tar_of(("dockerfile", HOSTILE))) == BuildContext(dockerfile=HOSTILE)
    assert read(tar_of(("sub/D", HOSTILE)), "sub/D").dockerfile == HOSTILE
    assert read(tar_of(("a.txt", b"x")), "Dockerfile") == BuildContext()  # the engine says


def test_a_gzipped_context_is_read_member_after_member() -> None:
    first = gzip.compress(tar_of(("Dockerfile", BENIGN))[:1024])  # no end-of-archive blocks
    rest = tar_of(("Dockerfile", HOSTILE))
    assert read(first + gzip.compress(rest), piece=100).dockerfile == HOSTILE
    assert read(gzip.compress(tar_of(("Dockerfile", BENIGN)))).dockerfile == BENIGN
    assert "cut short" in read(gzip.compress(rest)[:-20]).problem


@pytest.mark.parametrize(
    ("body", "dockerfile", "words"),
    [
        (tar_of(("real", HOSTILE), ("Dockerfile", "real")), "", "through the link Dockerfile"),
        (tar_of(("real/D", HOSTILE), ("sub", "real")), "sub/D", "through the link sub"),
        (tar_of(("Dockerfile", BENIGN), pax_global=True), "", "global PAX header"),
        (bz2.compress(tar_of(("Dockerfile", BENIGN))), "", "bzip2"),
        (b"FROM busybox\n" * 100, "", "not a tar"),
    ],
)
def test_a_context_the_engine_could_read_differently_is_a_problem(
    body: bytes, dockerfile: str, words: str
) -> None:
    assert words in read(body, dockerfile).problem


def test_a_context_cut_off_by_its_client_lets_the_reader_go() -> None:
    async def stream() -> None:
        reader = ContextReader("")
        reader.feed(tar_of(("Dockerfile", BENIGN))[:700])
        reader.abandon()
        await reader.finish()

    asyncio.run(asyncio.wait_for(stream(), timeout=30))
