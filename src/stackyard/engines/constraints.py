"""Swarm's placement constraints (``node.labels.zone == a``): their syntax, and whether a node
satisfies one.

stackyard.yml's ``placement.constraints`` are checked with ``parse_constraint`` when the file
is loaded (config/models.py); the deploy controller (deploy/placement.py) and the fake
cluster (engines/fake.py) ask ``holds`` which nodes a stage's tasks may run on. The rules
follow Swarm's own: a key, ``==`` or ``!=``, a value; values compare without case; a label
a node does not have never equals anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackyard.engines.base import NodeInfo

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]+")
_VALUE = re.compile(r"[A-Za-z0-9:_\s.*()?+\[\]\\^$|/-]+")
_FIXED_KEYS = (
    "node.id",
    "node.hostname",
    "node.ip",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
)
_LABEL_PREFIXES = ("node.labels.", "engine.labels.")
OPERATORS = ("==", "!=")


@dataclass(frozen=True)
class Constraint:
    key: str
    equal: bool  # == (True) or != (False)
    value: str

    def __str__(self) -> str:
        return f"{self.key} {'==' if self.equal else '!='} {self.value}"


def parse_constraint(text: str) -> Constraint:
    """``key == value`` or ``key != value``; ValueError saying what is wrong."""
    for operator in OPERATORS:
        key, found, value = text.partition(operator)
        if found:
            break
    else:
        raise ValueError(
            f"'{text}' has no operator: write <key> == <value> or <key> != <value>, "
            "e.g. node.labels.zone == a"
        )
    key, value = key.strip(), value.strip()
    if not _KEY.fullmatch(key) or not (
        key in _FIXED_KEYS or (key.startswith(_LABEL_PREFIXES) and key not in _LABEL_PREFIXES)
    ):
        keys = ", ".join((*_FIXED_KEYS, "node.labels.<name>", "engine.labels.<name>"))
        raise ValueError(f"'{text}': '{key}' is not a key Swarm knows (one of: {keys})")
    if not value or not _VALUE.fullmatch(value) or any(op in value for op in OPERATORS):
        raise ValueError(f"'{text}': '{value}' is not a value Swarm accepts")
    return Constraint(key, operator == "==", value)


def holds(constraint: Constraint, node: NodeInfo) -> bool:
    """Whether ``node`` satisfies the constraint. ``node.ip`` is Swarm's own to judge (the
    address it saw, with CIDR ranges): it counts as satisfied here."""
    if constraint.key == "node.ip":
        return True
    have = _attribute(node, constraint.key)
    same = have is not None and have.casefold() == constraint.value.casefold()
    return same if constraint.equal else not same


def _attribute(node: NodeInfo, key: str) -> str | None:
    fixed = {
        "node.id": node.id,
        "node.hostname": node.name,
        "node.role": node.role,
        "node.platform.os": node.platform.get("os", ""),
        "node.platform.arch": node.platform.get("arch", ""),
    }
    if key in fixed:
        return fixed[key]
    if key.startswith("node.labels."):
        return node.labels.get(key.removeprefix("node.labels."))
    if key.startswith("engine.labels."):
        return node.engine_labels.get(key.removeprefix("engine.labels."))
    return None
