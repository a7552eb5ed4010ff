"""``/api/v1/nodes``: the nodes of a cluster engine; drain, activate, and give one its address.

Only on an engine with nodes (``stackyard up --engine swarm``, or a swarm target named by
``?target=``); elsewhere every route answers with the usage error that says so. The work is
``NodeService``'s (deploy/nodes.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from stackyard.api.routes.builds import services
from stackyard.deploy.nodes import NodeService, NodeView
from stackyard.deploy.targetengines import LOCAL

router = APIRouter(prefix="/nodes", tags=["nodes"])


Target = Annotated[
    str, Query(description="The target whose engine's nodes these are: local (the platform's).")
]


class NodeList(BaseModel):
    nodes: list[NodeView]


class DrainRequest(BaseModel):
    force: bool = False


class AddressRequest(BaseModel):
    address: str


def nodes(request: Request) -> NodeService:
    found: NodeService = services(request).nodes
    return found


@router.get("")
def list_nodes(request: Request, target: Target = LOCAL) -> NodeList:
    return NodeList(nodes=nodes(request).list(target))


@router.get("/{node}")
def get_node(node: str, request: Request, target: Target = LOCAL) -> NodeView:
    return nodes(request).get(node, target)


@router.post("/{node}/drain")
def drain(node: str, body: DrainRequest, request: Request, target: Target = LOCAL) -> NodeView:
    return nodes(request).drain(node, force=body.force, target=target)


@router.post("/{node}/activate")
def activate(node: str, request: Request, target: Target = LOCAL) -> NodeView:
    return nodes(request).activate(node, target)


@router.put("/{node}/address")
def set_address(
    node: str, body: AddressRequest, request: Request, target: Target = LOCAL
) -> NodeView:
    return nodes(request).set_address(node, body.address, target)
