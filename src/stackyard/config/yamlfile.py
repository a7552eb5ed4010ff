"""Load YAML with the file, line and column of every value, and validate it against a model.

Used by the stackyard.yml and build spec loaders, so that every error and warning a user
sees names the place in their file (``build.yml:12:5: phases.biuld: ...``).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from stackyard.errors import ConfigError

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Position:
    line: int
    column: int


@dataclass(frozen=True)
class Problem:
    """One finding in a file: where it is, and what is wrong or suspicious."""

    source: str
    path: PathKey
    position: Position | None
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.position is not None:
            where += f":{self.position.line}:{self.position.column}"
        dotted = dotted_path(self.path)
        return f"{where}: {dotted}: {self.message}" if dotted else f"{where}: {self.message}"


@dataclass
class YamlDocument:
    """Plain Python data loaded from YAML, plus where each value and key came from."""

    source: str
    data: Any
    positions: dict[PathKey, Position] = field(default_factory=dict)

    def position_of(self, path: PathKey) -> Position | None:
        """The position of ``path``, or of its closest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            found = self.positions.get(path[:cut])
            if found is not None:
                return found
        return None

    def problem(self, path: PathKey, message: str) -> Problem:
        return Problem(self.source, path, self.position_of(path), message)


def dotted_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _mark(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed YAML node tree into plain data and a position map."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.positions: dict[PathKey, Position] = {}
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.positions[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[Any, Any]:
        self._constructor.flatten_mapping(node)  # merges <<
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise ConfigError(
                    f"{self.source}:{_mark(key_node).line}:{_mark(key_node).column}: "
                    f"a mapping key must be a plain value, not {type(key).__name__}"
                )
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                pos = _mark(key_node)
                raise ConfigError(
                    f"{self.source}:{pos.line}:{pos.column}: {dotted_path((*path, key))}: "
                    "this key appears twice in the same mapping",
                    hint="remove one of the two entries",
                )
            result[key] = self.build(value_node, (*path, key))
            # A key's own position is more useful than its value's for "unknown key".
            self.positions[(*path, key)] = _mark(key_node)
        return result


def load_yaml(text: str, source: str) -> YamlDocument:
    """Parse ``text``; raise ConfigError naming ``source``, line and column on bad YAML."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = exc.problem or exc.context or "malformed YAML"
        raise ConfigError(
            f"{where}: malformed YAML: {what}",
            hint="check the indentation and quoting around that line",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {exc}") from exc
    if node is None:
        return YamlDocument(source, None, {})
    builder = _Builder(source)
    data = builder.build(node, ())
    return YamlDocument(source, data, builder.positions)


def in_checkout(path: Path, checkout: Path) -> str:
    """``path`` as the repository names it, relative to ``checkout`` (a build's checkout
    is a temporary directory that means nothing to the reader of its log)."""
    return str(path.relative_to(checkout)) if path.is_relative_to(checkout) else str(path)


def load_yaml_file(path: Path, source: str | None = None) -> YamlDocument:
    """Parse the file at ``path``; problems name it ``source`` (default: the path)."""
    shown = str(path) if source is None else source
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{shown}: no such file", hint="check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot be read: {exc}") from exc
    return load_yaml(text, shown)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation such as ``Model | None``, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _container_model(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """For ``list[Model]`` or ``dict[str, Model]`` (optionally ``| None``): kind and model."""
    candidates = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates = list(typing.get_args(annotation))
    for candidate in candidates:
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin is list and args:
            model = _model_in(args[0])
            if model is not None:
                return "list", model
        if origin is dict and len(args) == 2:
            model = _model_in(args[1])
            if model is not None:
                return "dict", model
    return None


def field_names(model: type[BaseModel]) -> dict[str, str]:
    """The keys a model accepts in YAML (its aliases), mapped to the Python field name."""
    return {(info.alias or name): name for name, info in model.model_fields.items()}


def unknown_keys(doc: YamlDocument, model: type[BaseModel]) -> list[Problem]:
    """Keys in the document that ``model`` does not know, each with the closest valid key."""
    return list(_walk_unknown(doc, doc.data, model, ()))


def _walk_unknown(
    doc: YamlDocument, data: Any, model: type[BaseModel], path: PathKey
) -> Iterable[Problem]:
    if not isinstance(data, Mapping):
        return
    known = field_names(model)
    extra_ok = model.model_config.get("extra") == "allow"
    for key, value in data.items():
        if key not in known:
            if extra_ok:
                continue
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            suggestion = f"; did you mean '{close[0]}'?" if close else ""
            valid = ", ".join(sorted(known))
            yield doc.problem(
                (*path, key), f"unknown key '{key}'{suggestion} (valid keys: {valid})"
            )
            continue
        annotation = model.model_fields[known[key]].annotation
        child = _model_in(annotation)
        if child is not None:
            yield from _walk_unknown(doc, value, child, (*path, key))
            continue
        container = _container_model(annotation)
        if container is None:
            continue
        kind, item_model = container
        if kind == "list" and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _walk_unknown(doc, item, item_model, (*path, key, i))
        elif kind == "dict" and isinstance(value, Mapping):
            for name, item in value.items():
                yield from _walk_unknown(doc, item, item_model, (*path, key, name))


def validation_problems(doc: YamlDocument, exc: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into problems that point into the file."""
    problems = []
    for error in exc.errors(include_url=False):
        path: PathKey = tuple(
            part for part in error["loc"] if isinstance(part, str | int) and not _is_tag(part)
        )
        message = error["msg"]
        if error["type"] == "missing":
            message = f"required key '{path[-1]}' is missing" if path else "a value is missing"
            problems.append(doc.problem(path[:-1], message))
            continue
        if error["type"] not in {"value_error", "assertion_error"}:
            shown = error.get("input")
            if not isinstance(shown, dict | list):
                message += f" (got {shown!r})"
        problems.append(doc.problem(path, message.removeprefix("Value error, ")))
    return problems


def _is_tag(part: str | int) -> bool:
    # pydantic inserts union member tags such as "function-after[...]" into locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def raise_problems(problems: list[Problem], *, what: str) -> None:
    if not problems:
        return
    lines = "\n".join(f"  {p}" for p in problems)
    count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    raise ConfigError(f"{what} is invalid ({count}):\n{lines}")


def validate_document(doc: YamlDocument, model: type[M], *, what: str) -> tuple[M, list[Problem]]:
    """Validate ``doc`` against ``model``; return it with warnings for unknown keys.

    Raises ConfigError listing every problem with its file, line and column.
    """
    warnings = unknown_keys(doc, model)
    try:
        return model.model_validate(doc.data), warnings
    except ValidationError as exc:
        raise_problems(validation_problems(doc, exc), what=what)
        raise  # unreachable: raise_problems raised
