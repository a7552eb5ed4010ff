"""The Markdown reference of stackyard.yml (docs/stackyard-yml.md), generated from the models.

scripts/gen-config-reference writes it; a unit test checks that it is up to date.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from stackyard.config.models import StackConfig
from stackyard.config.values import DocType


@dataclass(frozen=True)
class DocumentedField:
    """One key of stackyard.yml as the reference shows it."""

    key_path: str
    name: str
    info: FieldInfo
    model: type[BaseModel]


def documented_fields(
    model: type[BaseModel] = StackConfig, prefix: str = ""
) -> Iterator[DocumentedField]:
    """Every key of stackyard.yml, depth first, with its dotted path (``stages[].health.path``)."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        key_path = f"{prefix}{key}"
        yield DocumentedField(key_path, key, info, model)
        child = _child_model(info.annotation)
        if child is not None:
            suffix = "[]." if typing.get_origin(_unoptional(info.annotation)) is list else "."
            yield from documented_fields(child, key_path + suffix)


def _unoptional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _child_model(annotation: Any) -> type[BaseModel] | None:
    inner = _unoptional(annotation)
    if typing.get_origin(inner) is list:
        inner = typing.get_args(inner)[0]
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def _type_text(info: FieldInfo) -> str:
    text = next((m.text for m in info.metadata if isinstance(m, DocType)), None)
    if text is None:
        text = _annotation_text(info.annotation)
    bounds = []
    for meta in info.metadata:
        # pydantic keeps ge=, gt=, le=, lt= as annotated_types objects with that one attribute.
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if type(meta).__name__ == attr.capitalize() and hasattr(meta, attr):
                bounds.append(f"{sign} {getattr(meta, attr)}")
    if bounds:
        text += f" ({' and '.join(bounds)})"
    return f"{text}, optional" if _unoptional(info.annotation) is not info.annotation else text


def _annotation_text(annotation: Any) -> str:
    inner = _unoptional(annotation)
    origin = typing.get_origin(inner)
    names: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if origin is Literal:
        text = " | ".join(f"`{value}`" for value in typing.get_args(inner))
    elif origin is Annotated:
        text = _annotation_text(typing.get_args(inner)[0])
    elif origin is list:
        item = typing.get_args(inner)[0]
        text = "list of mappings" if _child_model(item) else f"list of {_annotation_text(item)}s"
    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        text = "mapping"
    else:
        text = names.get(inner, getattr(inner, "__name__", str(inner)))
    return text


def _default_text(item: DocumentedField) -> str:
    info = item.info
    if info.is_required():
        return "required"
    if item.key_path == "stages":
        return "`dev`, `staging`, `prod` (see [No stackyard.yml](#no-stackyardyml))"
    factory = typing.cast(Callable[[], Any] | None, info.default_factory)
    value = factory() if factory is not None else info.default
    if value is None:
        return "not set"
    if isinstance(value, BaseModel):
        return "all defaults"
    return f"`{_flow_yaml(value)}`"


_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./*@ -]*")
_NOT_PLAIN = re.compile(
    r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|true|false|yes|no|on|off|null|~", re.I
)


def _flow_yaml(value: Any) -> str:
    """``value`` in YAML flow style, for one-line examples and defaults."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow_yaml(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.fullmatch(text) and not _NOT_PLAIN.fullmatch(text) and text == text.strip():
        return text
    return json.dumps(text)


def _example_text(item: DocumentedField) -> str:
    example = (item.info.examples or [None])[0]
    return f"`{item.name}: {_flow_yaml(example)}`"


_INTRO = """\
# stackyard.yml reference

<!-- Generated from src/stackyard/config/models.py by scripts/gen-config-reference.
     Do not edit by hand: change the models, then run
     .venv/bin/python scripts/gen-config-reference -->

`stackyard.yml` sits at the root of the repository (or where the stack's config file
setting points, in a monorepo). It says how the stack's image is built and lists the
stages a build is promoted through. Check a file with `stackyard config check [PATH]`;
`stackyard config schema` prints a JSON Schema for editors.

Keys are snake_case. An unknown key is a warning that names the closest valid key; a
value of the wrong type or out of range is an error that names the key and its
`file:line:column`. `stackyard config check` exits with status 2 when the file is invalid.

## No stackyard.yml

A repository without `stackyard.yml` gets every default below and three stages:
`dev` and `staging` (`promotion: auto`) and `prod` (`promotion: approval`). A
`stackyard.yml` without a `stages` key gets the same three stages.

## Per-stage override files

`stackyard.<stage>.yml`, next to `stackyard.yml`, holds keys of that one stage at its top
level, and is merged over the stage's entry in `stages`. For example, a
`stackyard.prod.yml` of

```yaml
cpu: 2
memory: 1g
deploy:
  drain_seconds: 15
```

changes only `prod`, and only those keys: mappings merge key by key, while lists and
plain values replace. A key set to `null` in an override file returns to its default.
The override file may repeat `name`, but it must match the stage in the file name. An
override file for a stage that does not exist is an error. Override files also apply
to the default stages.

## Durations and sizes

Durations are seconds: a number (`2`, `0.5`) or a string with a unit (`500ms`, `5s`,
`1m`). Memory sizes are a number and a unit, `b`, `k`, `m`, `g` or `t`, in powers of
1024 as in Docker (`256m`, `1g`, `1.5GiB`); the smallest is `6m`.

## Health checks

`health.type: http` (the default) sends `GET health.path` to each new task, and the
task takes traffic once one check passes. `health.type: docker` uses the image's own
`HEALTHCHECK` instead; an image without one is healthy once its container runs.

## Rolling deployments

During a deployment a stage runs at most `replicas * maximum_percent / 100` tasks
(rounded down) and keeps at least `replicas * minimum_healthy_percent / 100` healthy
tasks serving (rounded up). The gap must be at least one task, or the deployment
could neither start a new task nor stop an old one: with `minimum_healthy_percent:
100`, `maximum_percent` must leave room for one more task. The check names the value
to change.

## Keys
"""


def render_reference(example: str) -> str:
    """The Markdown reference of every key, followed by ``example`` (a complete stackyard.yml)."""
    parts = [_INTRO]
    for item in documented_fields():
        parts.append(
            f"\n### `{item.key_path}`\n\n"
            f"{item.info.description}\n\n"
            f"- Type: {_type_text(item.info)}\n"
            f"- Default: {_default_text(item)}\n"
            f"- Example: {_example_text(item)}\n"
        )
    parts.append(
        "\n## Complete example\n\n"
        "This file is `docs/examples/stackyard.yml`; a test checks that it is valid and "
        "uses every key.\n\n"
        f"```yaml\n{example.rstrip()}\n```\n"
    )
    return "".join(parts)
