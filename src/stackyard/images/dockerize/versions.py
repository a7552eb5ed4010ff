"""Language versions for generated Dockerfiles: the one table of supported versions, and
choosing one from what a project pins (``.python-version``, ``engines.node`` ...).

Pure functions over text: the Python and Node detections call ``choose``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from stackyard.errors import UsageError

Language = Literal["python", "node"]


@dataclass(frozen=True)
class Version:
    """One supported version: its official image, and the full version it stands for."""

    language: Language
    line: str  # "3.13", "22"
    full: str  # the newest release of that line known here, used to test ranges
    image: str  # the official image name; on machines that cannot pull, setup-host builds some


SUPPORTED: tuple[Version, ...] = (
    # First the default, then the versions that scripts/setup-host builds on machines that
    # cannot pull (python:3.11-slim, python:3.13-slim, node:22-slim), then the others: a range
    # takes the first of these that satisfies it.
    Version("python", "3.11", "3.11.14", "python:3.11-slim"),
    Version("python", "3.13", "3.13.9", "python:3.13-slim"),
    Version("python", "3.12", "3.12.12", "python:3.12-slim"),
    Version("python", "3.14", "3.14.0", "python:3.14-slim"),
    Version("python", "3.10", "3.10.19", "python:3.10-slim"),
    Version("node", "22", "22.23.3", "node:22-slim"),
    Version("node", "24", "24.21.0", "node:24-slim"),
    Version("node", "20", "20.19.5", "node:20-slim"),
)
"""Every version a generated Dockerfile may use, in the order a range picks from."""


@dataclass(frozen=True)
class Pin:
    """What a project asks for: an exact line (``3.13``) or a range (``>=3.12``), and where."""

    language: Language
    text: str
    source: str  # "pyproject.toml requires-python"
    exact: bool


@dataclass(frozen=True)
class Choice:
    """The version chosen for a project, and why, in words."""

    version: Version
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {
            "language": self.version.language,
            "version": self.version.line,
            "image": self.version.image,
            "reason": self.reason,
        }


def supported(language: Language) -> tuple[Version, ...]:
    return tuple(v for v in SUPPORTED if v.language == language)


def listing(language: Language) -> str:
    """``3.10, 3.11, 3.12, 3.13, 3.14``: the supported lines, sorted."""
    lines = sorted((v.line for v in supported(language)), key=_key)
    return ", ".join(lines)


def choose(language: Language, pins: list[Pin]) -> Choice:
    """The version for the first pin (the caller orders them by precedence), or the default.

    An exact pin must name a supported line; a range takes the first supported version in
    table order that satisfies it. Raises UsageError naming the versions that exist.
    """
    versions = supported(language)
    if not pins:
        return Choice(versions[0], f"nothing pins a {_name(language)} version: the default")
    pin = pins[0]
    ignored = "".join(f"; {p.source} ({p.text}) is not used" for p in pins[1:])
    if pin.exact:
        line = exact_line(language, pin.text)
        found = next((v for v in versions if v.line == line), None)
        if found is not None:
            return Choice(found, f"{pin.source} pins {pin.text}{ignored}")
        raise UsageError(
            f"{pin.source} pins {_name(language)} {pin.text}, and no image has it: the "
            f"supported versions are {listing(language)}",
            hint=f"pin one of {listing(language)} in {pin.source.split()[0]}, or add a Dockerfile",
        )
    matches = [v for v in versions if satisfies(language, pin.text, v.full)]
    if not matches:
        raise UsageError(
            f"{pin.source} asks for {_name(language)} {pin.text}, which none of the supported "
            f"versions ({listing(language)}) satisfies",
            hint=f"allow one of {listing(language)}, or add a Dockerfile",
        )
    chosen = matches[0]
    why = "the default" if chosen == versions[0] else "the first supported one"
    return Choice(chosen, f"{pin.source} allows {pin.text}: {chosen.line} is {why}{ignored}")


def _name(language: Language) -> str:
    return "Python" if language == "python" else "Node"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def exact_line(language: Language, text: str) -> str:
    """``3.13.1``, ``python-3.13`` or ``cpython@3.13`` -> ``3.13``; ``v22.1.0`` -> ``22``."""
    numbers = re.findall(r"\d+", text)
    if language == "node":
        return numbers[0] if numbers else text
    return ".".join(numbers[:2]) if len(numbers) >= 2 else text


# --- ranges ----------------------------------------------------------------------------


def satisfies(language: Language, spec: str, version: str) -> bool:
    """Whether ``version`` (``3.13.9``) meets ``spec``: PEP 440 specifiers and Poetry's
    ``^``/``~`` for Python, npm semver ranges for Node."""
    if language == "python":
        return _pep440(spec, version)
    return _semver(spec, version)


_PY_CLAUSE = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>|\^|~)?\s*v?([\d.*]+)\s*$")


def _parts(text: str, width: int = 3) -> tuple[int, ...]:
    numbers = [int(n) for n in text.split(".") if n.isdigit()]
    return tuple((numbers + [0] * width)[:width])


def _pep440(spec: str, version: str) -> bool:
    got = _parts(version)
    for clause in re.split(r"[,]", spec):
        if not clause.strip():
            continue
        match = _PY_CLAUSE.match(clause)
        if match is None:
            raise UsageError(f"cannot read the Python version specifier '{spec}'")
        op, text = match.group(1) or "==", match.group(2)
        if not _compare(op, text, got):
            return False
    return True


def _compare(op: str, text: str, got: tuple[int, ...]) -> bool:
    given = text.rstrip(".*").split(".")
    count = len(given)
    want = _parts(text.replace("*", "0"))
    if op in ("==", "===") and ("*" in text or count < 3):
        return got[:count] == want[:count]
    if op == "!=" and ("*" in text or count < 3):
        return got[:count] != want[:count]
    if op in ("~=", "~", "^"):
        upper = _upper(op, want, count)
        return want <= got < upper
    return {
        "==": got == want,
        "===": got == want,
        "!=": got != want,
        "<=": got <= want,
        ">=": got >= want,
        "<": got < want,
        ">": got > want,
    }[op]


def _upper(op: str, want: tuple[int, ...], count: int) -> tuple[int, ...]:
    """The exclusive upper bound of ``~=``, ``~`` and ``^`` (PEP 440, Poetry, npm)."""
    if op == "^":
        index = next((i for i, n in enumerate(want[:count]) if n != 0), count - 1)
    elif op == "~=":
        index = max(count - 2, 0)
    else:  # "~": bump the minor when given, else the major
        index = 1 if count >= 2 else 0
    bumped = [*want[:index], want[index] + 1]
    return tuple([*bumped, 0, 0, 0][:3])


def _semver(spec: str, version: str) -> bool:
    text = spec.strip()
    if text in ("", "*", "x", "latest", "lts/*", "node"):
        return True
    return any(_semver_set(part, version) for part in text.split("||"))


_HYPHEN = re.compile(r"^\s*([\dxX*.]+)\s+-\s+([\dxX*.]+)\s*$")
_NODE_CLAUSE = re.compile(r"^(\^|~|>=|<=|>|<|=)?v?([\dxX*.]+)$")


def _semver_set(text: str, version: str) -> bool:
    got = _parts(version)
    hyphen = _HYPHEN.match(text)
    if hyphen:
        low, high = hyphen.groups()
        return _node_clause(">=", low, got) and _node_clause("<=", high, got)
    for clause in text.split():
        match = _NODE_CLAUSE.match(clause)
        if match is None:
            raise UsageError(f"cannot read the Node version range '{text.strip()}'")
        if not _node_clause(match.group(1) or "=", match.group(2), got):
            return False
    return True


def _node_clause(op: str, text: str, got: tuple[int, ...]) -> bool:
    given = [p for p in text.split(".") if p and p not in ("x", "X", "*")]
    count = len(given)
    want = _parts(".".join(given))
    if count == 0:
        return True
    if op in ("^", "~"):
        return want <= got < _upper(op, want, count)
    if op == "=":
        return got[:count] == want[:count]
    if count < 3 and op in ("<=", ">"):  # "<=22" means "< 23"; ">22" means ">= 23"
        bumped = [*want[: count - 1], want[count - 1] + 1]
        upper = tuple([*bumped, 0, 0, 0][:3])
        return got < upper if op == "<=" else got >= upper
    return {"<": got < want, ">=": got >= want, "<=": got <= want, ">": got > want}[op]
