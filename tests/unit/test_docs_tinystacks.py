"""The migration guide's worked example is the one the tests run: each file it quotes
after a ``<!-- examples/tinystacks/FILE -->`` marker is that file, byte for byte
(tests/integration/test_tinystacks_example.py pushes those files through a pipeline)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "migrating-from-tinystacks.md"
QUOTED = re.compile(r"<!-- (examples/tinystacks/[\w.]+) -->\n\n```yaml\n(.*?)```\n", re.DOTALL)


def test_the_guide_quotes_the_example_specs_byte_for_byte() -> None:
    quoted = {path: text for path, text in QUOTED.findall(GUIDE.read_text(encoding="utf-8"))}
    assert sorted(quoted) == ["examples/tinystacks/build.yml", "examples/tinystacks/release.yml"]
    for path, text in quoted.items():
        assert text.encode() == (ROOT / path).read_bytes(), path


def test_the_example_specs_keep_every_line_tinystacks_runs() -> None:
    build = (ROOT / "examples/tinystacks/build.yml").read_text(encoding="utf-8")
    release = (ROOT / "examples/tinystacks/release.yml").read_text(encoding="utf-8")
    assert "aws ecr get-login-password | docker login --username AWS --password-stdin" in build
    assert "docker build -t builtimage ." in build
    assert "docker login -u AWS -p $(aws ecr get-login-password --region $AWS_REGION)" in release
    assert '[ "$SERVICE_NAME" == "placeholder" ]' in release  # bash's test, not dash's
    assert "<<<" in release  # a here-string: bash
    assert "aws ecs update-service" in release
    # TinyStacks' regional push, for a stage whose target uses another registry
    assert 'if [ ! -z "$REGIONAL_ECR_ENDPOINT" -a ! -z "$REGIONAL_ECR_IMAGE_URL" ]' in release
    assert (
        "docker login -u AWS -p $(aws ecr get-login-password --region $STAGE_REGION) "
        "$REGIONAL_ECR_ENDPOINT" in release
    )
    assert "docker push $REGIONAL_ECR_IMAGE_URL:$STAGE_NAME" in release
    assert 'region="${STAGE_REGION:-$AWS_REGION}"' in release
    assert "docker images --no-trunc --quiet $imageUrl:$PREVIOUS_STAGE_NAME" in release
    assert "#" not in build + release  # no line commented out
