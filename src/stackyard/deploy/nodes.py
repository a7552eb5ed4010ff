"""The nodes of a cluster engine as the API and ``stackyard nodes`` see them: list, drain,
activate, and give a node its address.

``drain`` moves a node's tasks with zero downtime: the node takes no new task (Swarm's
``pause``) and carries the ``dev.stackyard.draining`` label, whose value is the platform's
id; every stage with a task there (of any platform sharing the swarm) then treats it as
leaving (deploy/decide.py): a replacement starts on another node, serves, and only then
does the old task leave the route and stop. Once no task of the platform that labelled it
is left on it, that platform's controller makes it ``drain`` for Swarm too
(``Controller.finish_drains``).
A drain that would leave a stage with no node is refused, naming the stages, unless forced:
a forced drain is Swarm's own, at once, and the stages replace what they can.

Each call names a target (``local``, the platform's own engine, by default): a swarm
target's nodes are listed, drained and given addresses the same way, through that target's
engine, and its stages (those whose release runs there) are the ones that move.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy import records
from stackyard.deploy.controller import Controller
from stackyard.deploy.placement import eligible
from stackyard.deploy.targetengines import LOCAL
from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_STACK,
    LABEL_STAGE,
    NODE_LABEL_ADDRESS,
    NODE_LABEL_DRAINING,
    Availability,
    Engine,
    NodeInfo,
    NodeUse,
    address_problem,
)
from stackyard.errors import NotFoundError, UsageError, require
from stackyard.store.models import Stack


class NodeView(BaseModel):
    id: str
    name: str
    address: str
    address_from: str  # "label", or "engine" (Swarm's own guess: set a label)
    address_problem: str
    role: str
    state: str
    availability: str
    draining: bool  # the platform is moving its tasks away
    tasks: int  # the platform's tasks Swarm means to run there (running or on their way)
    # Every task Swarm means to run there, of any service: this platform's, another
    # platform's, anyone's (what placement counts; Engine.node_use).
    all_tasks: int
    stages: list[str]  # "stack/stage" of those tasks


class NodeService:
    """What ``stackyard nodes`` does, through the controller's engine."""

    def __init__(self, sessions: sessionmaker[Session], controller: Controller) -> None:
        self._sessions = sessions
        self._controller = controller

    def _engine(self, target: str) -> Engine:
        """The engine of ``target`` (followed from now on: a drain there is finished by
        its watch), refused unless it has nodes."""
        if target == LOCAL:
            engine = self._controller.engine
            hint = "nodes exist on a cluster engine: stackyard up --engine swarm"
        else:
            engine = self._controller.engines.engine(target)
            hint = f"nodes exist on a swarm target; see `stackyard targets` for {target}'s engine"
        require(engine, "nodes", needed_for="list or change nodes", hint=hint)
        return engine

    def list(self, target: str = LOCAL) -> builtins.list[NodeView]:
        engine = self._engine(target)
        nodes = engine.nodes()
        use = engine.node_use()  # one listing: every task on each node, and whose
        ordered = sorted(nodes, key=lambda n: (n.address, n.id))
        return [_view(node, use, self._platform) for node in ordered]

    def get(self, ref: str, target: str = LOCAL) -> NodeView:
        return self._view(self.resolve(ref, target), target)

    def resolve(self, ref: str, target: str = LOCAL) -> NodeInfo:
        """A node by its id, a unique prefix of it, its address, or its unique host name."""
        nodes = self._engine(target).nodes()
        listing = "stackyard nodes" + ("" if target == LOCAL else f" --target {target}")
        for matches in (
            [n for n in nodes if n.id == ref],
            [n for n in nodes if n.address == ref],
            [n for n in nodes if n.id.startswith(ref)],
            [n for n in nodes if n.name == ref],
        ):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(
                    f"'{ref}' names {len(matches)} nodes: {', '.join(n.id for n in matches)}",
                    hint=f"name the node by its id ({listing} lists them)",
                )
        known = ", ".join(f"{n.id} ({n.address})" for n in nodes) or "none"
        where = "the cluster" if target == LOCAL else f"target {target}'s cluster"
        raise NotFoundError(
            f"no node '{ref}' in {where} (nodes: {known})",
            hint="name a node by its id, a prefix of it, its address or its host name "
            f"({listing} lists them)",
        )

    def drain(self, ref: str, *, force: bool = False, target: str = LOCAL) -> NodeView:
        node = self.resolve(ref, target)
        engine = self._engine(target)
        if not force:
            losing = self._stages_losing(node, target)
            if losing:
                raise UsageError(
                    f"draining node {node.name or node.id} ({node.address}) would leave "
                    f"{', '.join(losing)} with no node to run on",
                    hint="activate or add a node those stages may use (or change their "
                    "placement.constraints) first; --force drains it anyway",
                )
            mark = {NODE_LABEL_DRAINING: self._platform}  # whose drain: its owner finishes it
            changed = engine.update_node(node.id, availability=Availability.PAUSE, labels=mark)
        else:
            changed = engine.update_node(
                node.id, availability=Availability.DRAIN, labels={NODE_LABEL_DRAINING: None}
            )
        self._changed(target)
        return self._view(changed, target)

    def activate(self, ref: str, target: str = LOCAL) -> NodeView:
        node = self.resolve(ref, target)
        changed = self._engine(target).update_node(
            node.id, availability=Availability.ACTIVE, labels={NODE_LABEL_DRAINING: None}
        )
        self._changed(target)
        return self._view(changed, target)

    def set_address(self, ref: str, address: str, target: str = LOCAL) -> NodeView:
        problem = address_problem(address)
        if problem:
            raise UsageError(
                f"--address: {problem}",
                hint="give the address the node's tasks answer on, e.g. 10.0.0.12 or "
                "node2.example.internal",
            )
        node = self.resolve(ref, target)
        changed = self._engine(target).update_node(node.id, labels={NODE_LABEL_ADDRESS: address})
        self._changed(target)
        return self._view(changed, target)

    # -- helpers

    def _view(self, node: NodeInfo, target: str) -> NodeView:
        return _view(node, self._engine(target).node_use(), self._platform)

    @property
    def _platform(self) -> str:
        return self._controller.settings.platform_id

    def _changed(self, target: str) -> None:
        """List the engine again now (its node event may come later), waking the stages."""
        self._controller.engines.follow(target).resync()
        self._controller.finish_drains()

    def _stages_losing(self, node: NodeInfo, target: str) -> builtins.list[str]:
        """The stages that run (or would run) on ``node`` and could run on no other node."""
        engine = self._engine(target)
        others = [n for n in engine.nodes() if n.id != node.id]
        on_node = {
            f"{t.labels.get(LABEL_STACK)}/{t.labels.get(LABEL_STAGE)}"
            for t in engine.list({LABEL_PLATFORM: self._platform})
            if t.node == node.id and t.running
        }
        losing = []
        for name, constraints in self._stage_placements(target):
            if eligible(others, constraints):
                continue
            if name in on_node or eligible([node], constraints):
                losing.append(name)
        return sorted(losing)

    def _stage_placements(self, target: str) -> Iterable[tuple[str, tuple[str, ...]]]:
        """(stack/stage, constraints) of every stage on ``target`` that runs a release with
        replicas."""
        with self._sessions() as session:
            stacks = {s.id: s.name for s in session.scalars(select(Stack))}
            current = records.current_releases(session, builtins.list(stacks))
            found = []
            for (stack_id, stage), release in current.items():
                config = records.stage_config(release)
                if config.replicas > 0 and config.target == target:
                    name = f"{stacks[stack_id]}/{stage}"
                    found.append((name, tuple(config.placement.constraints)))
        return found


def _view(node: NodeInfo, use: Mapping[str, NodeUse], platform: str) -> NodeView:
    """The node as listed; its counts both come from one listing of what it holds (every
    task Swarm means to run there, and which of them are the platform's)."""
    held = use.get(node.id, NodeUse())
    here = held.own(platform)
    return NodeView(
        id=node.id,
        name=node.name,
        address=node.address,
        address_from=node.address_from,
        address_problem=node.address_problem,
        role=node.role,
        state=str(node.state),
        availability=str(node.availability),
        draining=NODE_LABEL_DRAINING in node.labels,  # moving, not yet drained for Swarm
        tasks=len(here),
        all_tasks=held.tasks,
        stages=sorted({f"{stack}/{stage}" for stack, stage in here}),
    )
