"""The integration tests' lanes (tests/integration/lanes.py): which tests share a worker."""

from __future__ import annotations

from pathlib import Path

from tests.integration.lanes import LONGEST_FIRST, SHARED_GROUPS, lane_group, lane_rank

ROOT = Path(__file__).resolve().parents[2]
INTEGRATION = ROOT / "tests" / "integration"
SWARM_WORDS = ("stackyard-swarm", "swarm_cluster", "tests.integration.swarm")


def modules() -> list[str]:
    return sorted(
        f"tests/integration/{path.relative_to(INTEGRATION).as_posix()}"
        for path in INTEGRATION.rglob("test_*.py")
    )


def test_a_module_is_its_own_group_and_the_swarm_s_modules_share_one() -> None:
    assert lane_group("tests/integration/test_retention.py::test_x") == "test_retention"
    assert lane_group("tests/integration/swarm/test_swarm_faults.py::T::test_y[a-b]") == "swarm"
    assert lane_group("tests/integration/test_outside_registries.py::t") == "builtimage"
    assert lane_group("tests/unit/test_deploy_portpool.py::test_z") is None


def test_every_module_that_uses_the_test_swarm_is_in_the_swarm_group() -> None:
    users = [m for m in modules() if any(w in (ROOT / m).read_text() for w in SWARM_WORDS)]
    assert users, "no module uses the test swarm: the words to look for changed"
    assert {m: lane_group(m) for m in users} == {m: "swarm" for m in users}


def test_the_shared_groups_and_the_longest_name_modules_that_exist() -> None:
    groups = {lane_group(m) for m in modules()}
    assert set(SHARED_GROUPS) <= groups
    assert set(LONGEST_FIRST) <= groups
    assert [lane_rank(g) for g in LONGEST_FIRST] == list(range(len(LONGEST_FIRST)))
    assert lane_rank("test_doctor") == len(LONGEST_FIRST)
