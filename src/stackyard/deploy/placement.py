"""Where a stage's new tasks go on an engine with nodes (a swarm), as plain data.

Pure: ``decide`` (deploy/decide.py) asks which nodes may take the stage's tasks (ready,
active, not being drained, every constraint of the stage holds) and picks one for each
task it starts. With ``spread: node`` (the default) a node holds at most
ceil(replicas / eligible nodes) of the stage's tasks, and the least loaded node comes
first; a node where one of the stage's tasks just failed comes last, so a task lost with
its machine is replaced on another one. ``spread: none`` leaves the choice to Swarm.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

from stackyard.engines.base import NodeInfo
from stackyard.engines.constraints import holds, parse_constraint


def eligible(nodes: Iterable[NodeInfo], constraints: Sequence[str]) -> list[NodeInfo]:
    """The nodes that may take new tasks of a stage with these constraints."""
    parsed = [parse_constraint(text) for text in constraints]
    return [n for n in nodes if n.takes_tasks and all(holds(c, n) for c in parsed)]


def choose_nodes(
    count: int,
    *,
    replicas: int,
    nodes: Sequence[NodeInfo],
    staying: Mapping[str, int],
    load: Mapping[str, int],
    avoid: Collection[str] = (),
    spread: str = "node",
) -> tuple[str | None, ...]:
    """A node id for each of ``count`` new tasks (None: Swarm chooses).

    ``nodes`` are the eligible ones; ``staying`` counts the stage's tasks that stay on each
    node (alive, of the target release); ``load`` counts every task of the platform on
    each node; ``avoid`` are nodes where a task of the stage just failed.
    """
    if spread != "node" or not nodes:
        return (None,) * count
    cap = math.ceil(replicas / len(nodes))
    held = Counter({n.id: staying.get(n.id, 0) for n in nodes})
    busy = Counter({n.id: load.get(n.id, 0) for n in nodes})
    chosen: list[str | None] = []
    for _ in range(count):
        room = [n.id for n in nodes if held[n.id] < cap] or [n.id for n in nodes]
        best = min(room, key=lambda i: (i in avoid, held[i], busy[i], i))
        held[best] += 1
        busy[best] += 1
        chosen.append(best)
    return tuple(chosen)


def no_node_reason(stage: str, constraints: Sequence[str], nodes: Sequence[NodeInfo]) -> str:
    """Why no node can take the stage's tasks: the constraints, and the nodes as they are."""
    shown = ", ".join(
        f"{n.name or n.id} ({n.address or n.id}: {n.state}, {n.availability}"
        + (", being drained" if n.draining else "")
        + ")"
        for n in nodes
    )
    wanted = " and ".join(constraints) if constraints else "no constraints"
    return (
        f"stage {stage}: no node can take its tasks (placement: {wanted}); nodes: {shown or 'none'}"
    )
