"""``/api/v1/nodes``: the nodes of a cluster engine; drain, activate, and give one its address.

Only on an engine with nodes (``stackyard up --engine swarm``); elsewhere every route answers
with the usage error that says so. The work is ``NodeService``'s (deploy/nodes.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stackyard.api.routes.builds import services
from stackyard.deploy.nodes import NodeService, NodeView

router = APIRouter(prefix="/nodes", tags=["nodes"])


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
def list_nodes(request: Request) -> NodeList:
    return NodeList(nodes=nodes(request).list())


@router.get("/{node}")
def get_node(node: str, request: Request) -> NodeView:
    return nodes(request).get(node)


@router.post("/{node}/drain")
def drain(node: str, body: DrainRequest, request: Request) -> NodeView:
    return nodes(request).drain(node, force=body.force)


@router.post("/{node}/activate")
def activate(node: str, request: Request) -> NodeView:
    return nodes(request).activate(node)


@router.put("/{node}/address")
def set_address(node: str, body: AddressRequest, request: Request) -> NodeView:
    return nodes(request).set_address(node, body.address)
