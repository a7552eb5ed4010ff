"""Retention decides from plain facts: what each stack keeps, and the manifests, engine
references and log files that go. No process, no I/O."""

from __future__ import annotations

import pytest

from stackyard.pipeline.retention.plan import (
    EngineImage,
    LoggedRecord,
    ManifestRemoval,
    RegistryRepository,
    RetentionFacts,
    StageReleases,
    TargetName,
    kept_digests,
    plan_retention,
)

ENDPOINT = "127.0.0.1:5000"


def d(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64


def releases(stack: str, stage: str, *digests: str) -> StageReleases:
    """Releases numbered 1..n in the order given; the plan gets them newest first."""
    numbered = list(enumerate(digests, start=1))[::-1]
    return StageReleases(
        stack, stage, tuple(dg for _, dg in numbered), tuple(n for n, _ in numbered)
    )


def facts(**changes: object) -> RetentionFacts:
    base: dict[str, object] = {
        "keep_releases": 2,
        "stacks": frozenset({"shop"}),
        "releases": (releases("shop", "dev", d(1), d(2), d(3), d(4)),),
        "repositories": (
            RegistryRepository(
                "shop",
                {"latest": d(5), "dev": d(4), "c5": d(5)},
                frozenset({d(1), d(2), d(3), d(4), d(5), d(6)}),
            ),
        ),
        "engine_endpoint": ENDPOINT,
    }
    base.update(changes)
    return RetentionFacts(**base)  # type: ignore[arg-type]


def test_the_last_n_releases_the_stage_tags_and_latest_are_kept_with_their_reason() -> None:
    assert kept_digests(facts(), "shop") == {
        d(4): "release 4 of dev",
        d(3): "release 3 of dev",
        d(5): "tag latest",
    }


def test_every_other_manifest_of_the_stack_goes_with_its_tags() -> None:
    plan = plan_retention(facts())
    assert plan.manifests == (
        ManifestRemoval("shop", d(1), ()),
        ManifestRemoval("shop", d(2), ()),
        ManifestRemoval("shop", d(6), ()),
    )


def test_an_image_a_task_runs_is_kept_however_old() -> None:
    plan = plan_retention(facts(running={"shop": frozenset({d(1)})}))
    assert plan.kept["shop"][d(1)] == "a task runs it"
    assert [m.digest for m in plan.manifests] == [d(2), d(6)]


def test_keeping_counts_per_stage_and_a_digest_in_two_stages_stays() -> None:
    two_stages = (
        releases("shop", "dev", d(1), d(2), d(3), d(4)),
        releases("shop", "prod", d(1), d(2)),
    )
    plan = plan_retention(facts(releases=two_stages))
    assert plan.kept["shop"][d(1)] == "release 1 of prod"
    assert [m.digest for m in plan.manifests] == [d(6)]


def test_a_rollback_release_keeps_the_old_digest_it_copied() -> None:
    rolled_back = (releases("shop", "dev", d(1), d(2), d(3), d(4), d(1)),)
    plan = plan_retention(facts(releases=rolled_back))
    assert plan.kept["shop"][d(1)] == "release 5 of dev"
    assert plan.kept["shop"][d(4)] == "release 4 of dev"
    assert d(3) not in plan.kept["shop"]


def test_a_deleted_stack_keeps_nothing() -> None:
    gone = RegistryRepository("old", {"latest": d(7)}, frozenset({d(7), d(8)}))
    plan = plan_retention(facts(repositories=(*facts().repositories, gone)))
    assert ManifestRemoval("old", d(7), ("latest",)) in plan.manifests
    assert ManifestRemoval("old", d(8), ()) in plan.manifests
    assert "old" not in plan.kept


def test_a_kept_index_keeps_the_manifests_it_lists() -> None:
    plan = plan_retention(facts(children={d(4): (d(1), d(2))}))
    assert plan.kept["shop"][d(1)].startswith("part of sha256:44444444")
    assert [m.digest for m in plan.manifests] == [d(6)]


def test_engine_references_of_old_images_go_latest_and_kept_digests_stay() -> None:
    images = (
        EngineImage("i-latest", (f"{ENDPOINT}/shop:latest", f"{ENDPOINT}/shop@{d(5)}")),
        EngineImage("i-kept", (f"{ENDPOINT}/shop@{d(4)}",)),
        EngineImage("i-old", (f"{ENDPOINT}/shop@{d(1)}", "shop-built:old")),
        EngineImage("i-gone-stack", (f"{ENDPOINT}/old:latest",)),
        EngineImage("i-not-ours", ("busybox:latest",)),
    )
    plan = plan_retention(facts(engine_images=images))
    assert plan.engine_references == (f"{ENDPOINT}/shop@{d(1)}",)


def test_the_build_image_and_the_dockerize_base_images_are_never_removed() -> None:
    """Build containers run stackyard/build:bookworm, and generated Dockerfiles start FROM
    python:3.13-slim, node:22-slim or caddy:2: retention only drops references under the
    platform's registry name, so an old build that added nothing to its base (one image,
    both names) loses its registry reference and the base keeps its own."""
    bases = ("stackyard/build:bookworm", "python:3.13-slim", "node:22-slim", "caddy:2")
    images = (
        EngineImage("i-build", (bases[0],)),
        EngineImage("i-python", (bases[1], f"{ENDPOINT}/shop@{d(1)}")),
        EngineImage("i-node", (bases[2], "node@sha256:" + "e" * 64)),
        EngineImage("i-caddy", (bases[3],)),
    )
    plan = plan_retention(facts(engine_images=images))
    assert plan.engine_references == (f"{ENDPOINT}/shop@{d(1)}",)
    assert not {r.split("@")[0] for r in plan.engine_references} & set(bases)


def test_a_stack_whose_name_starts_like_another_is_its_own() -> None:
    images = (EngineImage("i", (f"{ENDPOINT}/shopfront@{d(4)}",)),)
    both = facts(stacks=frozenset({"shop", "shopfront"}), engine_images=images)
    assert plan_retention(both).engine_references == (f"{ENDPOINT}/shopfront@{d(4)}",)


def test_images_pulled_from_a_target_registry_go_unless_kept() -> None:
    """A stage on a target with its own registry runs images the engine pulled under that
    registry's name: they go like the platform's names, kept digests and all; a name in
    that registry that is no stack's copies (another team's) is left alone."""
    regional = "127.0.0.1:5001/acme/shop"
    images = (
        EngineImage("i-old", (f"{regional}@{d(1)}",)),
        EngineImage("i-kept", (f"{regional}@{d(4)}",)),
        EngineImage("i-both", (f"{regional}@{d(2)}", f"{ENDPOINT}/shop@{d(2)}")),
        EngineImage("i-theirs", ("127.0.0.1:5001/acme/other@" + d(1),)),
        EngineImage("i-tagged", (f"{regional}:prod", f"{regional}@{d(6)}")),
    )
    plan = plan_retention(facts(engine_images=images, target_names=(TargetName(regional, "shop"),)))
    assert plan.engine_references == (
        f"{regional}@{d(1)}",
        f"{regional}@{d(2)}",
        f"{ENDPOINT}/shop@{d(2)}",
        f"{regional}:prod",
        f"{regional}@{d(6)}",
    )


def test_a_target_name_under_the_platform_registry_counts_for_its_own_stack() -> None:
    """A target pulling from another repository of the platform's registry (a namespace):
    the name is that stack's, not a stack called like the namespace."""
    name = f"{ENDPOINT}/eu/shop"
    images = (EngineImage("i", (f"{name}@{d(4)}",)), EngineImage("j", (f"{name}@{d(1)}",)))
    plan = plan_retention(facts(engine_images=images, target_names=(TargetName(name, "shop"),)))
    assert plan.engine_references == (f"{name}@{d(1)}",)


def test_logs_beyond_the_last_n_per_stack_and_stage_go_with_build_artifacts() -> None:
    records = tuple(
        LoggedRecord("builds", "shop", "", n, f"/d/logs/builds/shop/{n}.log") for n in (1, 2, 3)
    ) + tuple(
        LoggedRecord("deployments", "shop", stage, n, f"/d/logs/deployments/shop/{stage}/{n}.log")
        for stage in ("dev", "prod")
        for n in (1, 2, 3)
    )
    plan = plan_retention(facts(records=records, artifacts_dir="/d/logs/artifacts"))
    assert plan.files == (
        "/d/logs/builds/shop/1.log",
        "/d/logs/artifacts/shop/1",
        "/d/logs/deployments/shop/dev/1.log",
        "/d/logs/deployments/shop/prod/1.log",
    )


def test_log_folders_of_deleted_stacks_go() -> None:
    plan = plan_retention(facts(log_dirs=(("builds", "shop"), ("builds", "old"), ("runs", "old"))))
    assert plan.folders == ("builds/old", "runs/old")


def test_nothing_to_do_is_an_empty_plan() -> None:
    tidy = facts(repositories=(RegistryRepository("shop", {"dev": d(4)}, frozenset({d(3), d(4)})),))
    assert plan_retention(tidy).empty


def test_keeping_fewer_than_one_release_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_retention(facts(keep_releases=0))
