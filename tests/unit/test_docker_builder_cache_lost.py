"""DockerBuilder's second try when an image its build took from the cache is gone.

The real race is in tests/integration/test_docker_builder.py; here, the engine's answers
are scripted to pin down which errors earn the second try and which do not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackyard.images.docker_builder import BuildFailedError, DockerBuilder

CACHED = "9b30113e04ce"
LOST = f"sha256:{CACHED}3a6f22ada8d84bb11b4e39caec6d5ceb32bbfbcdfc196e1057ab"
OTHER = "sha256:" + "1" * 64


class ScriptedApi:
    """Answers each ``build`` with the next scripted list of chunks."""

    def __init__(self, *answers: list[dict[str, Any]]) -> None:
        self.answers = list(answers)
        self.builds = 0

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.builds += 1
        return iter(self.answers.pop(0))


def cache_hit_then(error: str) -> list[dict[str, Any]]:
    return [
        {"stream": "Step 2/3 : RUN echo one > /one\n"},
        {"stream": " ---> Using cache\n"},
        {"stream": f" ---> {CACHED}\n"},
        {"stream": "Step 3/3 : COPY f /f\n"},
        {"error": error},
    ]


BUILT = [{"stream": "Step 3/3 : COPY f /f\n"}, {"aux": {"ID": "sha256:" + "2" * 64}}]


def builder_with(api: ScriptedApi) -> DockerBuilder:
    builder = object.__new__(DockerBuilder)
    builder._api = api  # type: ignore[assignment]
    return builder


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM busybox:latest\n")
    return tmp_path


@pytest.mark.parametrize(
    "error",
    [
        f'unable to find image "{LOST}"',
        f"failed to export image: failed to set parent {LOST}: unknown parent image ID {LOST}",
    ],
)
def test_a_cached_step_that_went_is_built_again(context: Path, error: str) -> None:
    api = ScriptedApi(cache_hit_then(error), BUILT)
    lines: list[str] = []
    image_id = builder_with(api).build(
        context, dockerfile="Dockerfile", tags=["x:1"], network_mode="none", on_line=lines.append
    )
    assert image_id == "sha256:" + "2" * 64
    assert api.builds == 2
    assert any("took from its cache" in line and LOST in line for line in lines), lines


@pytest.mark.parametrize(
    "answers",
    [
        [cache_hit_then(f'unable to find image "{OTHER}"')],  # not an image this build cached
        [[{"stream": "Step 1/1 : FROM nope\n"}, {"error": f"No such image: {LOST}"}]],  # none
        [cache_hit_then(f'unable to find image "{LOST}"')] * 2,  # twice: said, not looped
    ],
    ids=["another-image", "nothing-cached", "twice"],
)
def test_other_build_errors_fail_as_the_engine_said(
    context: Path, answers: list[list[dict[str, Any]]]
) -> None:
    api = ScriptedApi(*answers)
    with pytest.raises(BuildFailedError, match="docker build failed at Dockerfile") as caught:
        builder_with(api).build(
            context, dockerfile="Dockerfile", tags=["x:1"], network_mode="none", on_line=print
        )
    assert api.builds == len(answers)
    assert "sha256:" in caught.value.message
