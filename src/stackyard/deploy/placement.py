"""Where a stage's new tasks go on an engine with nodes (a swarm), as plain data.

Pure: ``decide`` (deploy/decide.py) asks which nodes may take the stage's tasks (ready,
active, not being drained, every constraint of the stage holds) and picks one for each
task it starts. With ``spread: node`` (the default) a node holds at most
ceil(replicas / eligible nodes) of the stage's tasks, and the least loaded node comes
first: loaded by the engine's own account (every task on the node, this platform's,
another platform's or anyone's, and the cpu and memory they reserve against the node's),
and a node without room for the task's reservations after the ones with room. A node where
one of the stage's tasks just failed comes last, so a task lost with its machine is
replaced on another one. ``spread: none`` leaves the choice to Swarm.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

from stackyard.engines.base import NodeInfo, NodeUse
from stackyard.engines.constraints import holds, parse_constraint

ONE_TASK = NodeUse(tasks=1)  # a task that reserves nothing


def eligible(nodes: Iterable[NodeInfo], constraints: Sequence[str]) -> list[NodeInfo]:
    """The nodes that may take new tasks of a stage with these constraints."""
    return [n for n in satisfying(nodes, constraints) if n.takes_tasks]


def satisfying(nodes: Iterable[NodeInfo], constraints: Sequence[str]) -> list[NodeInfo]:
    """The nodes every constraint holds for, whatever their state and availability."""
    parsed = [parse_constraint(text) for text in constraints]
    return [n for n in nodes if all(holds(c, n) for c in parsed)]


def choose_nodes(
    count: int,
    *,
    replicas: int,
    nodes: Sequence[NodeInfo],
    staying: Mapping[str, int],
    use: Mapping[str, NodeUse],
    need: NodeUse = ONE_TASK,
    avoid: Collection[str] = (),
    spread: str = "node",
) -> tuple[str | None, ...]:
    """A node id for each of ``count`` new tasks (None: Swarm chooses).

    ``nodes`` are the eligible ones; ``staying`` counts the stage's tasks that stay on each
    node (alive, of the target release); ``use`` is what each node holds by the engine's
    account (every task there, this platform's or not, and their reservations); ``need``
    what one new task reserves; ``avoid`` are nodes where a task of the stage just failed.
    Among the nodes under the stage's cap: not avoided first, then those with room for
    ``need`` (Swarm would keep the task pending elsewhere), then the fewest of the stage's
    tasks, the fewest tasks of all, the smallest share of cpu or memory reserved.
    """
    if spread != "node" or not nodes:
        return (None,) * count
    cap = math.ceil(replicas / len(nodes))
    held = Counter({n.id: staying.get(n.id, 0) for n in nodes})
    load = {n.id: use.get(n.id, NodeUse()) for n in nodes}
    by_id = {n.id: n for n in nodes}

    def order(node_id: str) -> tuple[bool, bool, int, int, float, str]:
        node, now = by_id[node_id], load[node_id]
        fits = _fits(node, now, need)
        return (node_id in avoid, not fits, held[node_id], now.tasks, _share(node, now), node_id)

    chosen: list[str | None] = []
    for _ in range(count):
        room = [n.id for n in nodes if held[n.id] < cap] or [n.id for n in nodes]
        best = min(room, key=order)
        held[best] += 1
        load[best] += need
        chosen.append(best)
    return tuple(chosen)


def _fits(node: NodeInfo, use: NodeUse, need: NodeUse) -> bool:
    """Whether the node has the cpu and memory ``need`` reserves left (unknown: yes)."""
    cpu_ok = not node.cpu or use.cpu + need.cpu <= node.cpu + 1e-9
    return cpu_ok and (not node.memory or use.memory + need.memory <= node.memory)


def _share(node: NodeInfo, use: NodeUse) -> float:
    """The larger of the node's reserved cpu and memory shares (0 when unknown)."""
    cpu = use.cpu / node.cpu if node.cpu else 0.0
    return max(cpu, use.memory / node.memory if node.memory else 0.0)


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
