"""Releasing a chosen image (``release --commit|--digest|--tag [--force]``) and where each
release came from (its origin).

A real git repository and GitSource; the registry is the Registry seam's in-memory fake.
A refused choice records nothing and moves no tag.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from stackyard.access.rules import Protection
from stackyard.deploy import records
from stackyard.deploy.overview import stack_rows
from stackyard.errors import AccessDenied, NotFoundError, UsageError
from stackyard.pipeline.releases import ImageChoice
from stackyard.stacks.service import StackService
from stackyard.statuses import ReleaseOrigin
from stackyard.store.database import alembic_config, migrate, open_database
from stackyard.store.models import Build, PipelineRun

from .test_release_promote import STACK, Yard
from .test_release_promote import yard as yard  # the fixture
from .test_source_git import commit

CONFIG = {"stages": [{"name": "dev"}, {"name": "staging"}, {"name": "prod"}]}


@pytest.fixture
def two_builds(yard: Yard) -> tuple[str, str, str, str]:
    """Two commits built: (sha1, digest1, sha2, digest2); build 2 is ``latest``."""
    sha1 = commit(yard.repo, {"README.md": "one\n"}, "one")
    digest1 = yard.built(sha1, 1, CONFIG)
    sha2 = commit(yard.repo, {"README.md": "two\n"}, "two")
    digest2 = yard.built(sha2, 2, CONFIG)
    return sha1, digest1, sha2, digest2


def test_release_by_commit_takes_that_build_not_latest(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    sha1, digest1, _, digest2 = two_builds
    release = yard.releases.release(
        STACK, "dev", choice=ImageChoice("commit", sha1[:7]), created_by="ann"
    )
    assert (release.digest, release.commit_sha, release.build_number) == (digest1, sha1, 1)
    assert (release.origin, release.forced) == (ReleaseOrigin.CHOSEN, False)
    assert release.source == f"chosen commit {sha1[:7]}"
    assert release.config["stage"] == {"name": "dev"}  # the snapshot of that build's config
    assert yard.registry.tags[(STACK, "dev")] == digest1
    assert yard.registry.tags[(STACK, "latest")] == digest2  # untouched
    log = Path(release.log_path).read_text(encoding="utf-8")
    assert f"chosen image (commit {sha1[:7]}): retag {digest1} -> dev" in log

    promoted = yard.releases.release(STACK, "dev")  # a plain release still promotes latest
    assert (promoted.digest, promoted.origin) == (digest2, ReleaseOrigin.PROMOTION)


def test_a_chosen_image_must_have_passed_the_previous_stage(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    sha1, digest1, _, _ = two_builds
    with pytest.raises(UsageError) as refused:
        yard.releases.release(STACK, "staging", choice=ImageChoice("digest", digest1))
    assert refused.value.message == (
        f"image {digest1} was never released to dev, the stage before staging"
    )
    assert refused.value.hint is not None
    assert "--force" in refused.value.hint
    assert yard.releases.list(STACK) == []
    assert (STACK, "staging") not in yard.registry.tags

    yard.releases.release(STACK, "dev", choice=ImageChoice("commit", sha1))
    yard.releases.release(STACK, "dev")  # dev moves on to build 2: build 1 still passed dev
    release = yard.releases.release(STACK, "staging", choice=ImageChoice("commit", sha1))
    assert (release.digest, release.forced) == (digest1, False)
    assert yard.registry.tags[(STACK, "staging")] == digest1


def test_force_skips_the_previous_stage_and_the_record_says_by_whom(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    _, digest1, _, _ = two_builds
    release = yard.releases.release(
        STACK, "prod", choice=ImageChoice("digest", digest1), force=True, created_by="ann"
    )
    assert (release.origin, release.forced, release.created_by) == (
        ReleaseOrigin.CHOSEN,
        True,
        "ann",
    )
    assert release.source == f"chosen digest {digest1} (forced)"
    assert "forced past staging" in Path(release.log_path).read_text(encoding="utf-8")
    assert yard.registry.tags[(STACK, "prod")] == digest1


def test_release_by_tag(yard: Yard, two_builds: tuple[str, str, str, str]) -> None:
    sha1, digest1, _, _ = two_builds
    release = yard.releases.release(STACK, "dev", choice=ImageChoice("tag", sha1))
    assert (release.digest, release.source) == (digest1, f"chosen tag {sha1}")


def test_a_commit_never_built_names_the_build_command(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    with pytest.raises(NotFoundError) as refused:
        yard.releases.release(STACK, "dev", choice=ImageChoice("commit", "4fe8827"))
    assert refused.value.message == "no image for commit 4fe8827: no build of it succeeded"
    assert refused.value.hint == "build it: stackyard build shop --commit 4fe8827"
    assert yard.releases.list(STACK) == []


def test_a_commit_prefix_naming_several_built_commits_is_refused_naming_them(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    sha1, digest1, _, _ = two_builds
    twin = sha1[:4] + ("0" if sha1[4] != "0" else "1") + sha1[5:]  # same first 4 digits
    with yard.releases._sessions.begin() as session:
        stack = StackService.row(session, STACK)
        session.add(Build(stack_id=stack.id, number=3, commit_sha=twin, status="SUCCEEDED",
                          digest=digest1, config=CONFIG))  # fmt: skip
    with pytest.raises(UsageError) as refused:
        yard.releases.release(STACK, "dev", choice=ImageChoice("commit", sha1[:4]))
    assert refused.value.message == (
        f"--commit {sha1[:4]} names 2 built commits: "
        + ", ".join(sorted(c[:12] for c in (sha1, twin)))
    )
    assert refused.value.hint == "give more of the sha"
    assert yard.releases.list(STACK) == []
    release = yard.releases.release(STACK, "dev", choice=ImageChoice("commit", sha1[:5]))
    assert release.digest == digest1  # five digits name one commit


@pytest.mark.parametrize(
    ("choice", "error", "message"),
    [
        (ImageChoice("digest", "sha256:" + "0" * 64), NotFoundError, "is not in 127.0.0.1"),
        (ImageChoice("digest", "latest"), UsageError, "--digest latest is not a digest"),
        (ImageChoice("tag", "nosuchtag"), NotFoundError, "tag nosuchtag is not in 127.0.0.1"),
        (ImageChoice("commit", "zzz; rm"), UsageError, "is not a commit sha"),
    ],
)
def test_an_image_not_in_the_stack_repository_is_refused(
    yard: Yard,
    two_builds: tuple[str, str, str, str],
    choice: ImageChoice,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        yard.releases.release(STACK, "dev", choice=choice)
    assert yard.releases.list(STACK) == []
    assert (STACK, "dev") not in yard.registry.tags


def test_an_image_no_build_made_is_refused(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    outside = yard.registry.push_image(STACK, "pushed-by-hand", [b"outside"])
    with pytest.raises(NotFoundError, match="only images Stackyard built can be released"):
        yard.releases.release(STACK, "dev", choice=ImageChoice("digest", outside))


def test_the_image_of_a_commit_deleted_from_the_registry_is_refused(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    sha1, digest1, _, _ = two_builds
    yard.registry.delete_manifest(STACK, digest1)
    with pytest.raises(NotFoundError, match=f"image of commit {sha1[:7]} .* is no longer in"):
        yard.releases.release(STACK, "dev", choice=ImageChoice("commit", sha1[:7]))


def test_choosing_is_one_way_and_force_needs_a_choice(yard: Yard) -> None:
    with pytest.raises(UsageError, match="not --commit and --tag"):
        ImageChoice.given(commit="abcd", tag="x")
    with pytest.raises(UsageError, match="--digest is empty"):
        ImageChoice.given(digest=" ")
    assert ImageChoice.given() is None
    assert ImageChoice.given(tag="v1") == ImageChoice("tag", "v1")
    with pytest.raises(UsageError, match="--force only applies to a chosen image"):
        yard.releases.release(STACK, "dev", force=True)


def test_a_rollback_is_recorded_as_one(yard: Yard, two_builds: tuple[str, str, str, str]) -> None:
    first = yard.releases.release(STACK, "dev", choice=ImageChoice("commit", two_builds[0]))
    yard.releases.release(STACK, "dev")
    copy = yard.releases.copy(STACK, "dev", first.number, source="rollback", created_by="bob")
    assert (copy.origin, copy.digest, copy.forced) == ("rollback", first.digest, False)


def test_existing_releases_get_their_origin_from_their_source(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    database = open_database(url)
    config = alembic_config(url)
    with database.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0009")  # before releases had an origin
        connection.execute(
            text(
                "INSERT INTO stacks (name, repo, branch, context_dir, dockerfile, poll_seconds, "
                "created_at, updated_at) VALUES ('shop', 'r', 'main', '.', 'Dockerfile', 0, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        for number, source in enumerate(
            [
                "retag latest",
                "release.yml",
                "rollback (copy of release 1)",
                "automatic rollback after deployment 3 FAILED (copy of release 2)",
                "variables changed (image of release 2)",
            ],
            start=1,
        ):
            connection.execute(
                text(
                    "INSERT INTO releases (stack_id, stage, number, digest, commit_sha, config, "
                    "source, created_by, log_path, created_at) VALUES (1, 'dev', :n, 'd', '', "
                    "'{}', :source, '', '', '2026-01-01 00:00:00')"
                ),
                {"n": number, "source": source},
            )
    migrate(database)
    with database.connect() as connection:
        rows = connection.execute(text("SELECT origin, forced FROM releases ORDER BY number"))
        assert [tuple(row) for row in rows] == [
            ("promotion", 0),
            ("promotion", 0),
            ("rollback", 0),
            ("rollback", 0),
            ("variables", 0),
        ]
    database.dispose()


def test_a_release_never_deployed_shows_beside_the_current_one(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    """`stackyard release` records and moves the tag; the stage runs its current release
    until a deployment: the grid and `stages list` say a newer one waits."""
    sha1, _, _, _ = two_builds

    def cell() -> tuple[int | None, int | None]:
        with yard.releases._sessions() as session:
            [row] = stack_rows(session, {}, only=STACK)
        [dev] = [c for c in row.stages if c.stage == "dev"]
        return dev.release, dev.undeployed_release

    def deploy(number: int) -> None:
        with yard.releases._sessions.begin() as session:
            stack = StackService.row(session, STACK)
            release = records.find_release(session, stack.id, "dev", number)
            done = records.create(
                session, stack.id, "dev", release, trigger="test", log_dir=yard.logs
            )
            done.status = "COMPLETED"

    assert cell() == (None, None)
    yard.releases.release(STACK, "dev", created_by="ann")
    assert cell() == (None, 1)  # released, never deployed
    deploy(1)
    assert cell() == (1, None)
    yard.releases.release(STACK, "dev", choice=ImageChoice("commit", sha1), created_by="ann")
    assert cell() == (1, 2)
    deploy(1)  # deploying an older release leaves the newest waiting
    assert cell() == (1, 2)
    deploy(2)
    assert cell() == (2, None)


def ran(yard: Yard, number: int, sha: str, pushed_by: str) -> None:
    """Run ``number`` of ``sha``, pushed (or started) by ``pushed_by`` ("" when polled)."""
    with yard.releases._sessions.begin() as session:
        stack = StackService.row(session, STACK)
        session.add(
            PipelineRun(
                stack_id=stack.id, number=number, commit_sha=sha, trigger="test",
                pushed_by=pushed_by, log_path="",
            )
        )  # fmt: skip


FOUR_EYES = Protection(
    "prod", approvers=("alice", "bob"), deployers=("alice", "bob"), four_eyes=True
)


def test_four_eyes_refuses_the_pusher_releasing_their_own_commit_by_hand(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    """The attack: bob pushed, may not approve his run at prod's gate, and so releases
    his commit to prod himself. It is refused, and nothing is recorded or tagged."""
    sha1, digest1, _, _ = two_builds
    ran(yard, 1, sha1, "bob")
    for choice in (ImageChoice("commit", sha1), ImageChoice("digest", digest1)):
        with pytest.raises(AccessDenied) as refused:
            yard.releases.release(
                STACK, "prod", choice=choice, force=True, created_by="bob", four_eyes=FOUR_EYES
            )
        assert refused.value.message == (
            f"stage prod needs four eyes: bob pushed commit {sha1[:12]} (run 1) and may not "
            "also release it to prod"
        )
        assert refused.value.hint is not None
        assert f"another deployer of {STACK}/prod may release it" in refused.value.hint
    assert yard.releases.list(STACK) == []
    assert (STACK, "prod") not in yard.registry.tags

    ran(yard, 2, sha1, "alice")  # alice ran it too: bob is still one of its pushers
    with pytest.raises(AccessDenied):
        yard.releases.release(
            STACK, "prod", choice=ImageChoice("commit", sha1), force=True, created_by="BOB",
            four_eyes=FOUR_EYES,
        )  # fmt: skip
    released = yard.releases.release(
        STACK, "prod", choice=ImageChoice("commit", sha1), force=True, created_by="carol",
        four_eyes=FOUR_EYES,
    )  # fmt: skip
    assert released.digest == digest1
    # Without four eyes, a pusher may release their own commit.
    again = yard.releases.release(
        STACK, "prod", choice=ImageChoice("commit", sha1), force=True, created_by="bob",
        four_eyes=Protection("prod", deployers=("bob",)),
    )  # fmt: skip
    assert again.number == 2


def test_four_eyes_refuses_a_commit_nobody_is_known_to_have_pushed(
    yard: Yard, two_builds: tuple[str, str, str, str]
) -> None:
    sha1, _, sha2, _ = two_builds
    ran(yard, 1, sha1, "")  # polled
    for sha in (sha1, sha2):  # sha2: built by hand, no run
        with pytest.raises(AccessDenied) as refused:
            yard.releases.release(
                STACK, "prod", choice=ImageChoice("commit", sha), force=True, created_by="alice",
                four_eyes=FOUR_EYES,
            )  # fmt: skip
        assert f"nobody knows who pushed commit {sha[:12]}" in refused.value.message
    # A plain promotion is a way in too: what staging runs, pushed by alice.
    ran(yard, 2, sha2, "alice")
    yard.releases.release(STACK, "dev")
    yard.releases.release(STACK, "staging")
    with pytest.raises(AccessDenied):
        yard.releases.release(STACK, "prod", created_by="alice", four_eyes=FOUR_EYES)
    assert yard.releases.release(STACK, "prod", created_by="bob", four_eyes=FOUR_EYES).number == 1
