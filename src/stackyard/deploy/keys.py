"""How the deploy package names one stage of one stack (the stage loops, the task watch,
the health scheduler and the API's wake-ups all key on it), and the stage's route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stackyard.engines.base import LABEL_STACK, LABEL_STAGE
from stackyard.router.base import Route, TlsMode


@dataclass(frozen=True)
class StageKey:
    stack: str
    stage: str

    def __str__(self) -> str:
        return f"{self.stack}/{self.stage}"

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> StageKey | None:
        """The stage a task belongs to, from its labels; None without them."""
        stack, stage = labels.get(LABEL_STACK), labels.get(LABEL_STAGE)
        return cls(stack, stage) if stack and stage else None


def stage_route(key: StageKey, port: int | None, host: str | None) -> Route:
    """The router's route of a stage: named ``<stack>-<stage>``, on its port or host."""
    return Route(name=stage_route_name(key), port=port, host=host)


def stage_route_name(key: StageKey) -> str:
    """``<stack>-<stage>``: DNS labels joined by a dash, so never with a dot (the platform's
    own routes, e.g. its public API's, have one)."""
    return f"{key.stack}-{key.stage}"


def may_be_stage_route(name: str) -> bool:
    return "." not in name


@dataclass(frozen=True)
class Domains:
    """The platform's domain settings: with a ``base`` domain each stage is served on
    ``<stage>.<stack>.<base>``; ``tls`` is how a stage that does not choose is served."""

    base: str | None = None
    tls: TlsMode = "off"

    def default_name(self, key: StageKey) -> str | None:
        return f"{key.stage}.{key.stack}.{self.base}" if self.base else None
