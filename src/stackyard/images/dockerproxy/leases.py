"""Local image names a run holds: a build's or release's scratch names, one run at a time.

A build spec names its image locally (TinyStacks' ``docker build -t builtimage .``), as
CodeBuild, where every build starts from a fresh environment, lets it. On one engine such a
name is one name for every stack, so a run holds each local name it writes from its first
write until it ends (the proxy then removes the name, see ``server``). Another run that
writes the same name waits until the holder ends; it is refused when the wait would never
end (two runs each waiting for a name the other holds) or lasts longer than ``wait``. The
leases live on the proxy's loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

NAME_WAIT = 600.0  # seconds a run waits for a local name another run holds
_PROXY = "Stackyard's build proxy"


@dataclass(eq=False)
class RunNames:
    """One run's local names: those it holds, those its requests made (the engine named an
    image so), and the one it waits for."""

    held: set[str] = field(default_factory=set)
    made: set[str] = field(default_factory=set)
    waiting_for: str | None = None
    ended: bool = False
    scratch: bool = False  # its names are removed when it ends (the platform's runs)


@dataclass(frozen=True)
class _Holder:
    run: RunNames
    stack: str


class NameLeases:
    """Which run holds which local name (``name:tag``, as the engine lists it)."""

    def __init__(self, wait: float = NAME_WAIT) -> None:
        self.wait = wait
        self._holders: dict[str, _Holder] = {}
        self._released: asyncio.Event | None = None  # set (and replaced) at each release

    def holder(self, name: str) -> RunNames | None:
        held = self._holders.get(name)
        return held.run if held is not None else None

    async def take(
        self,
        names: Iterable[str],
        run: RunNames,
        stack: str,
        on_wait: Callable[[str], None] = lambda _notice: None,
    ) -> tuple[set[str], str | None]:
        """Hold ``names`` for ``run`` (of ``stack``), waiting for the runs that hold them;
        the names newly held, and the refusal when one cannot be had (then none of them
        is newly held). ``on_wait`` is told once per name the run starts to wait for, and
        why (its build log says it: a build that stalls says on what)."""
        wanted = sorted(set(names))
        if run.ended and wanted:  # a request still in flight when its run's socket closed
            return set(), (
                f"{_PROXY} refused to write {', '.join(wanted)}: this build or release has "
                "ended (its local names are removed; it holds none any more)"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        taken: set[str] = set()
        for name in wanted:
            refusal = await self._wait_for(name, run, stack, deadline, on_wait)
            if refusal is not None:
                self.give_back(taken, run)
                return set(), refusal
            if name not in run.held:
                self._holders[name] = _Holder(run, stack)
                run.held.add(name)
                taken.add(name)
        return taken, None

    async def _wait_for(
        self,
        name: str,
        run: RunNames,
        stack: str,
        deadline: float,
        on_wait: Callable[[str], None],
    ) -> str | None:
        loop = asyncio.get_running_loop()
        told = False
        try:
            while True:
                held = self._holders.get(name)
                if held is None or held.run is run:
                    return None
                who = (
                    f"another build or release of {stack}"
                    if held.stack == stack
                    else "a build or release of another stack"
                )
                if self._waits_on(held.run, run):
                    return (
                        f"{_PROXY} refused to write {name}: {who} running now holds that "
                        "local name and waits for a local name this run holds. Give the "
                        "image a name of your own ($STACK_NAME-<name>), or tag "
                        "$IMAGE_URL:<tag> straight away"
                    )
                left = deadline - loop.time()
                if run.ended or left <= 0:
                    return (
                        f"{_PROXY} refused to write {name}: {who} running now holds that "
                        f"local name, still after {self.wait:g} s of waiting (a local name "
                        "is one run's own until that run ends, then it is removed). Give the "
                        "image a name of your own ($STACK_NAME-<name>), or tag "
                        "$IMAGE_URL:<tag> straight away"
                    )
                run.waiting_for = name
                if not told:
                    told = True
                    on_wait(
                        f"{_PROXY}: waiting for the local image name {name}: {who} running "
                        "now holds it (a local name is one run's own until that run ends); "
                        f"up to {left:.0f} s more. A name of your own ($STACK_NAME-<name>) "
                        "never waits"
                    )
                await self._next_release(left)
        finally:
            run.waiting_for = None

    def _waits_on(self, holder: RunNames, run: RunNames) -> bool:
        """Whether ``holder`` waits, directly or through other runs, for a name ``run``
        holds: then neither would ever go on."""
        seen: set[int] = set()
        current: RunNames | None = holder
        while current is not None and current.waiting_for is not None and id(current) not in seen:
            seen.add(id(current))
            current = self.holder(current.waiting_for)
            if current is run:
                return True
        return False

    async def _next_release(self, timeout: float) -> None:
        if self._released is None:
            self._released = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), timeout)

    def give_back(self, names: Iterable[str], run: RunNames) -> None:
        """``run`` no longer holds ``names``; the runs waiting for one look again."""
        for name in names:
            held = self._holders.get(name)
            if held is not None and held.run is run:
                del self._holders[name]
            run.held.discard(name)
        if self._released is not None:
            self._released.set()
            self._released = None

    def end(self, run: RunNames) -> None:
        """The run ended: its names go to the runs waiting for them (its own wait ends)."""
        run.ended = True
        self.give_back(set(run.held), run)
