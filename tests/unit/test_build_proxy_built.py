"""The image a build made, read from the engine's answer as the build proxy passes it on."""

from __future__ import annotations

import json

from stackyard.images.dockerproxy.built import BuiltImage

ID = "sha256:" + "3a" * 32
OTHER = "sha256:" + "0d" * 32


def answer(*messages: dict[str, object]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\r\n" for m in messages)


def read(data: bytes, *, quiet: bool = False, piece: int = 7) -> str | None:
    built = BuiltImage(quiet=quiet)
    for start in range(0, len(data), piece):  # the engine's chunks split lines anywhere
        built.feed(data[start : start + piece])
    return built.image


def test_the_engine_s_aux_message_names_the_image() -> None:
    data = answer(
        {"stream": "Step 1/2 : FROM busybox"},
        {"stream": f"{OTHER}\n"},  # a RUN step's output: any text
        {"aux": {"ID": ID}},
        {"stream": "Successfully built 3a3a3a3a3a3a\n"},
    )
    assert read(data) == ID
    assert read(answer({"id": "moby.image.id", "aux": {"ID": ID}}), quiet=True) == ID  # BuildKit


def test_a_quiet_build_s_one_message_names_the_image() -> None:
    assert read(answer({"stream": f"{ID}\n"}), quiet=True) == ID
    assert read(answer({"stream": f"{ID}\n"})) is None  # not quiet: a step's output


def test_a_failed_build_names_nothing_whatever_its_steps_printed() -> None:
    failed = answer(
        {"stream": "Step 2/2 : RUN echo ... && false"},
        {"stream": f"{OTHER}\n"},
        {"errorDetail": {"code": 1, "message": "returned 1"}, "error": "returned 1"},
    )
    assert read(failed, quiet=True) is None
    first = answer({"stream": f"{OTHER}\n"}, {"error": "returned 1"})
    assert read(first, quiet=True) is None
    assert read(answer({"aux": {"ID": "not-an-id"}})) is None
    assert read(b"") is None


def test_a_long_step_output_line_is_skipped_whole() -> None:
    long = {"stream": "x" * 70_000 + json.dumps({"aux": {"ID": OTHER}})}
    assert read(answer(long, {"aux": {"ID": ID}}), piece=4096) == ID
    assert read(answer(long), piece=4096) is None
