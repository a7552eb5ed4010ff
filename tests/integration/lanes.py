"""The integration tests in two lanes: which tests must run on one worker, and in what order.

``scripts/test`` runs them with ``pytest -n 2 --dist loadgroup --no-loadscope-reorder``.
A group runs whole on one worker, so a module's module-scoped platform starts once. A group
is a module, except ``SHARED_GROUPS``: modules that share what cannot be shared run in one.

pytest-xdist 3.8.0's own ``loadgroup`` groups by the ``xdist_group`` mark, which it reads on
the workers and appends to each test's node id (``…::test@group``), and pytest 9 no longer
takes a node id set that way (``Node._nodeid`` is gone): every test would be its own unit,
a module split over both workers. ``LaneScheduling`` therefore takes a test's group from its
node id's path, with the same ``lane_group`` that gives the marks (tests/conftest.py makes
it the ``loadgroup`` scheduler).
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

PREFIX = "tests/integration/"

SHARED_GROUPS = {
    # The three-node test swarm: one session fixture, nodes killed and scaled on purpose.
    "swarm": ("swarm/",),
    # The tinystacks build spec's bare `docker build -t builtimage`, then `docker tag
    # builtimage:latest`: two builds of it on one engine at once tag each other's image.
    "builtimage": ("test_tinystacks_example.py", "test_builds_releases.py",
                   "test_outside_registries.py"),
    # The engine's one BuildKit cgroup, which the build proxy gives a BuildKit build's
    # limits: these tests read it back (``buildkit_budget.py``), and would read the other's.
    "buildkit": ("test_isolation.py", "test_build_proxy.py"),
}  # fmt: skip

# The longest groups first (one at a time in CI, Nov 2026: the corpus ~600 s, the swarm
# ~650 s, the next ~100-200 s), so the two longest start at once, one per worker, and the
# short ones fill in around them; the rest keep their collection order.
LONGEST_FIRST = ("test_dockerize_corpus", "swarm", "test_target_engines", "builtimage",
                 "test_retention", "test_pipelines", "test_upgrade", "test_deployments",
                 "test_dataplane")  # fmt: skip


def lane_group(nodeid: str) -> str | None:
    """The group of the integration test ``nodeid``; None for any other test."""
    path = nodeid.split("::", 1)[0]
    if not path.startswith(PREFIX):
        return None
    relative = path.removeprefix(PREFIX)
    for group, prefixes in SHARED_GROUPS.items():
        if relative.startswith(prefixes):
            return group
    return relative.removesuffix(".py").replace("/", ".")


def lane_rank(group: str | None) -> int:
    """Where a group starts: the longest first, the others after them."""
    return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)


class LaneScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with a test's group (``lane_group``) as its scope; tests
    outside the integration tests are each their own."""

    def _split_scope(self, nodeid: str) -> str:
        return lane_group(nodeid) or nodeid
