"""The nodes of a cluster engine as the API and ``stackyard nodes`` see them: list, drain,
activate, and give a node its address.

``drain`` moves a node's tasks with zero downtime: the node takes no new task (Swarm's
``pause``) and carries the ``dev.stackyard.draining`` label; every stage with a task there
then treats it as leaving (deploy/decide.py): a replacement starts on another node, serves,
and only then does the old task leave the route and stop. Once no task of the platform is
left on it, the controller makes it ``drain`` for Swarm too (``Controller.finish_drains``).
A drain that would leave a stage with no node is refused, naming the stages, unless forced:
a forced drain is Swarm's own, at once, and the stages replace what they can.
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
    TaskInfo,
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

    @property
    def _engine(self) -> Engine:
        engine = self._controller.engine
        require(
            engine,
            "nodes",
            needed_for="list or change nodes",
            hint="nodes exist on a cluster engine: stackyard up --engine swarm",
        )
        return engine

    def list(self) -> builtins.list[NodeView]:
        nodes = self._engine.nodes()
        use = self._engine.node_use()  # one listing: every task on each node, and whose
        ordered = sorted(nodes, key=lambda n: (n.address, n.id))
        return [_view(node, use, self._platform) for node in ordered]

    def get(self, ref: str) -> NodeView:
        return self._view(self.resolve(ref))

    def resolve(self, ref: str) -> NodeInfo:
        """A node by its id, a unique prefix of it, its address, or its unique host name."""
        nodes = self._engine.nodes()
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
                    hint="name the node by its id (stackyard nodes lists them)",
                )
        known = ", ".join(f"{n.id} ({n.address})" for n in nodes) or "none"
        raise NotFoundError(
            f"no node '{ref}' in the cluster (nodes: {known})",
            hint="name a node by its id, a prefix of it, its address or its host name "
            "(stackyard nodes lists them)",
        )

    def drain(self, ref: str, *, force: bool = False) -> NodeView:
        node = self.resolve(ref)
        if not force:
            losing = self._stages_losing(node)
            if losing:
                raise UsageError(
                    f"draining node {node.name or node.id} ({node.address}) would leave "
                    f"{', '.join(losing)} with no node to run on",
                    hint="activate or add a node those stages may use (or change their "
                    "placement.constraints) first; --force drains it anyway",
                )
            changed = self._engine.update_node(
                node.id, availability=Availability.PAUSE, labels={NODE_LABEL_DRAINING: "1"}
            )
        else:
            changed = self._engine.update_node(
                node.id, availability=Availability.DRAIN, labels={NODE_LABEL_DRAINING: None}
            )
        self._changed()
        return self._view(changed)

    def activate(self, ref: str) -> NodeView:
        node = self.resolve(ref)
        changed = self._engine.update_node(
            node.id, availability=Availability.ACTIVE, labels={NODE_LABEL_DRAINING: None}
        )
        self._changed()
        return self._view(changed)

    def set_address(self, ref: str, address: str) -> NodeView:
        problem = address_problem(address)
        if problem:
            raise UsageError(
                f"--address: {problem}",
                hint="give the address the node's tasks answer on, e.g. 10.0.0.12 or "
                "node2.example.internal",
            )
        node = self.resolve(ref)
        changed = self._engine.update_node(node.id, labels={NODE_LABEL_ADDRESS: address})
        self._changed()
        return self._view(changed)

    # -- helpers

    def _view(self, node: NodeInfo) -> NodeView:
        return _view(node, self._engine.node_use(), self._platform)

    @property
    def _platform(self) -> str:
        return self._controller.settings.platform_id

    def _tasks(self) -> builtins.list[TaskInfo]:
        return self._engine.list({LABEL_PLATFORM: self._platform})

    def _changed(self) -> None:
        """List the engine again now (its node event may come later), waking the stages."""
        self._controller.watch.resync()
        self._controller.finish_drains()

    def _stages_losing(self, node: NodeInfo) -> builtins.list[str]:
        """The stages that run (or would run) on ``node`` and could run on no other node."""
        others = [n for n in self._engine.nodes() if n.id != node.id]
        on_node = {
            f"{t.labels.get(LABEL_STACK)}/{t.labels.get(LABEL_STAGE)}"
            for t in self._tasks()
            if t.node == node.id and t.running
        }
        losing = []
        for name, constraints in self._stage_placements():
            if eligible(others, constraints):
                continue
            if name in on_node or eligible([node], constraints):
                losing.append(name)
        return sorted(losing)

    def _stage_placements(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        """(stack/stage, constraints) of every stage that runs a release with replicas."""
        with self._sessions() as session:
            stacks = {s.id: s.name for s in session.scalars(select(Stack))}
            current = records.current_releases(session, builtins.list(stacks))
            found = []
            for (stack_id, stage), release in current.items():
                config = records.stage_config(release)
                if config.replicas > 0:
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
