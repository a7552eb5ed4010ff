"""The path filter of a run: build.paths read through the config loader, then matched."""

from __future__ import annotations

from stackyard.pipeline.runs.filters import PathFilter, path_filter, skip_reason

WHERE = "stackyard.yml at abc123"


def test_build_paths_come_from_the_file() -> None:
    raw = b"build:\n  paths: ['services/api/**', libs/shared]\nstages: [{name: dev}]\n"
    assert path_filter(raw, WHERE) == PathFilter(("services/api/**", "libs/shared"))


def test_no_file_or_no_paths_filter_nothing() -> None:
    assert path_filter(None, WHERE) == PathFilter()
    assert path_filter(b"build: {dockerfile: Dockerfile}\n", WHERE) == PathFilter()
    assert skip_reason(PathFilter(), ["anything"]) is None


def test_a_file_that_does_not_load_filters_nothing_and_says_why() -> None:
    broken = path_filter(b"build:\n  paths: [a\n", WHERE)
    assert broken.paths == ()
    assert broken.problem.startswith(f"{WHERE}:3:1: ")  # the loader's file:line:column
    assert "malformed YAML" in broken.problem
    invalid = path_filter(b"build:\n  paths: /abs/path\n", WHERE)
    assert invalid.paths == ()
    assert invalid.problem.startswith(f"{WHERE}: build.paths: ")
    assert path_filter(b"\xff\xfe", WHERE).problem == f"{WHERE}: not UTF-8 text"


def test_a_run_is_skipped_only_when_no_change_touches_the_paths() -> None:
    found = PathFilter(("services/api/**",))
    assert skip_reason(found, ["services/api/app.py", "README.md"]) is None
    assert skip_reason(found, ["services/web/app.py"]) == (
        "no change touches build.paths (services/api/**); changed: services/web/app.py"
    )
    assert skip_reason(found, []) == (
        "no change touches build.paths (services/api/**); changed: nothing"
    )
