"""Which builds start their build container alongside the checkout: what git says first."""

from __future__ import annotations

from stackyard.pipeline.builds.early import NO_SPEC, SpecPlan, spec_plan
from stackyard.source.fake import FakeSource

URL = "https://git.example/shop.git"


def source_with(files: dict[str, str | None]) -> tuple[FakeSource, str]:
    source = FakeSource()
    sha = source.commit(URL, files)
    source.resolve("shop", URL, None, "main")
    return source, sha


def test_a_commit_with_a_build_spec_gets_its_container_early_in_its_image() -> None:
    source, sha = source_with(
        {"build.yml": "version: 0.2\n", "stackyard.yml": "build: {image: 'node:22-slim'}\n"}
    )
    assert spec_plan(source, "shop", sha, ".") == SpecPlan("node:22-slim")


def test_the_spec_is_looked_for_in_the_build_context() -> None:
    source, sha = source_with(
        {
            "services/api/ci.yml": "version: 0.2\n",
            "stackyard.yml": "build: {context: services/api, buildspec: ci.yml}\n",
        }
    )
    assert spec_plan(source, "shop", sha, ".") == SpecPlan(None)
    assert spec_plan(source, "shop", sha, "services/web") is NO_SPEC  # the stack's context


def test_no_spec_or_a_stackyard_yml_that_does_not_load_starts_nothing_early() -> None:
    # No spec: git says so (a default build). A stackyard.yml that does not load: git cannot
    # tell (None); the build says why after the checkout.
    source, sha = source_with({"Dockerfile": "FROM busybox\n"})
    assert spec_plan(source, "shop", sha, ".") is NO_SPEC
    broken, sha = source_with({"build.yml": "version: 0.2\n", "stackyard.yml": "build: [\n"})
    assert spec_plan(broken, "shop", sha, ".") is None
    bad, sha = source_with(
        {"build.yml": "version: 0.2\n", "stackyard.yml": "build: {image: 'X Y'}\n"}
    )
    assert spec_plan(bad, "shop", sha, ".") is None
