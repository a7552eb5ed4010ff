"""Load ``stackyard.yml`` with its per-stage override files into a validated StackConfig.

Used by the ``stackyard config`` commands and by builds; every problem names file:line:col.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stackyard.config.models import StackConfig, StageConfig, default_stages
from stackyard.config.yamlfile import (
    PathKey,
    Position,
    Problem,
    YamlDocument,
    in_checkout,
    load_yaml_file,
    raise_problems,
    unknown_keys,
    validation_problems,
)
from stackyard.errors import ConfigError

_Namer = Callable[[Path], str]  # how a problem names a file

DEFAULT_FILE = "stackyard.yml"
DEFAULT_SOURCE = "(default stackyard.yml)"


@dataclass
class LoadedConfig:
    """A validated stack configuration, its warnings, and the files it came from."""

    config: StackConfig
    warnings: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    is_default: bool = False


@dataclass
class _MergedDocument(YamlDocument):
    """The base document with override files merged into some stages.

    A problem points into the override file when the value it is about came from there.
    """

    overrides: dict[int, YamlDocument] = field(default_factory=dict)

    def problem(self, path: PathKey, message: str) -> Problem:
        if len(path) >= 2 and path[0] == "stages" and isinstance(path[1], int):
            override = self.overrides.get(path[1])
            if override is not None:
                inner = path[2:]
                if inner and inner in override.positions:
                    return override.problem(inner, message)
                found = super().problem(path, message)
                return Problem(
                    found.source,
                    found.path,
                    found.position,
                    f"{found.message} (after merging {override.source})",
                )
        return super().problem(path, message)


def load_stack_config(
    repo_dir: Path,
    *,
    file: str = DEFAULT_FILE,
    targets: Collection[str] | None = None,
    in_repo: bool = False,
) -> LoadedConfig:
    """Load ``file`` (relative to ``repo_dir``) and its ``<stem>.<stage>.yml`` override files.

    Without the file, a repository gets the default stages (dev, staging, prod), unless
    ``file`` names a file other than the default, which must then exist. With ``targets``
    (the platform's target names), a stage naming another target is a problem too.
    Raises ConfigError listing every problem with file:line:col. With ``in_repo``, files
    are named by their path in the repository (a build's checkout is a temporary
    directory that means nothing to the reader of its log).
    """
    base_path = repo_dir / file
    shown: _Namer = (lambda path: in_checkout(path, repo_dir)) if in_repo else str
    if base_path.is_file():
        doc = load_yaml_file(base_path, shown(base_path))
        if doc.data is None:
            doc.data = {}
        is_default = False
    elif file == DEFAULT_FILE and not (repo_dir / "stackyard.yaml").exists():
        doc = YamlDocument(DEFAULT_SOURCE, {})
        is_default = True
    else:
        raise ConfigError(_missing_message(repo_dir, file))
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"{doc.source}: the file must be a mapping with keys such as build and stages, "
            f"not a {type(doc.data).__name__}"
        )
    warnings = unknown_keys(doc, StackConfig)
    override_files = find_override_files(base_path)
    merged, override_warnings = _merge_overrides(doc, override_files, shown)
    warnings += override_warnings
    config = _validate(merged, warnings)
    if targets is not None:
        raise_problems(unknown_targets(merged, config, targets), what=merged.source)
    files = ([] if is_default else [base_path]) + [path for _, path in override_files]
    return LoadedConfig(config, warnings, files, is_default)


def unknown_targets(
    doc: YamlDocument, config: StackConfig, targets: Collection[str]
) -> list[Problem]:
    """A problem for each stage whose ``target`` is not one of ``targets``, at its line."""
    known = ", ".join(sorted(targets))
    return [
        doc.problem(
            ("stages", index, "target"),
            f"stage '{stage.name}' runs on target '{stage.target}', which the platform does "
            f"not have (targets: {known}); add it (stackyard targets add) or pick one of those",
        )
        for index, stage in enumerate(config.stages)
        if stage.target not in targets
    ]


def _missing_message(repo_dir: Path, file: str) -> str:
    if file == DEFAULT_FILE:
        return f"{repo_dir / 'stackyard.yaml'}: Stackyard reads stackyard.yml; rename the file"
    return f"{repo_dir / file}: no such file"


def find_override_files(base_path: Path) -> list[tuple[str, Path]]:
    """``(stage name, path)`` of each ``<stem>.<stage>.yml`` next to ``base_path``, sorted."""
    stem, suffix = base_path.stem, base_path.suffix or ".yml"
    found = []
    if not base_path.parent.is_dir():
        return []
    for path in sorted(base_path.parent.glob(f"{stem}.*{suffix}")):
        stage = path.name[len(stem) + 1 : -len(suffix)]
        if stage and path.is_file():
            found.append((stage, path))
    return found


def _merge_overrides(
    doc: YamlDocument, override_files: list[tuple[str, Path]], shown: _Namer
) -> tuple[_MergedDocument, list[Problem]]:
    data = copy.deepcopy(doc.data)
    if "stages" not in data:
        data["stages"] = [stage.model_dump(exclude_defaults=True) for stage in default_stages()]
    merged = _MergedDocument(doc.source, data, doc.positions)
    stages = data["stages"]
    if not override_files or not isinstance(stages, list):
        return merged, []
    index_of = {
        stage["name"]: i
        for i, stage in enumerate(stages)
        if isinstance(stage, dict) and isinstance(stage.get("name"), str)
    }
    warnings: list[Problem] = []
    for stage_name, path in override_files:
        if stage_name not in index_of:
            valid = ", ".join(str(name) for name in index_of)
            raise ConfigError(
                f"{shown(path)}: override file for stage '{stage_name}', which is not a stage of "
                f"{doc.source}",
                hint=f"valid stages: {valid}; name the file {path.name.split('.')[0]}"
                f".<stage>{path.suffix}, or add the stage",
            )
        override = _load_override(path, stage_name, shown(path))
        warnings += unknown_keys(override, StageConfig)
        index = index_of[stage_name]
        stages[index] = deep_merge(stages[index], override.data)
        merged.overrides[index] = override
    return merged, warnings


def _load_override(path: Path, stage_name: str, source: str) -> YamlDocument:
    override = load_yaml_file(path, source)
    if override.data is None:
        override.data = {}
    if not isinstance(override.data, dict):
        raise ConfigError(
            f"{source}: an override file must be a mapping of the stage's own keys, such as "
            f"cpu: 2, not a {type(override.data).__name__}"
        )
    misplaced = sorted({"build", "stages"} & override.data.keys())
    if misplaced:
        raise ConfigError(
            f"{source}: {', '.join(misplaced)}: an override file holds the keys of stage "
            f"'{stage_name}' only, at its top level",
            hint="write the stage's keys directly, such as cpu: 2; build settings stay in "
            "stackyard.yml",
        )
    name = override.data.get("name", stage_name)
    if name != stage_name:
        pos = override.position_of(("name",)) or Position(1, 1)
        raise ConfigError(
            f"{source}:{pos.line}:{pos.column}: name: '{name}' differs from the stage "
            f"'{stage_name}' the file name gives",
            hint="remove the name key; the file name says which stage it overrides",
        )
    return override


def deep_merge(base: Any, override: Any) -> Any:
    """``override`` over ``base``: mappings merge key by key, anything else replaces.

    A key set to null in ``override`` is removed, so the field returns to its default.
    """
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    result = dict(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = deep_merge(result.get(key), value)
    return result


def _validate(doc: _MergedDocument, warnings: list[Problem]) -> StackConfig:
    """Validate the merged data; the error lists every problem, then the warnings."""
    try:
        return StackConfig.model_validate(doc.data)
    except ValidationError as exc:
        overrides = ", ".join(sorted(o.source for o in doc.overrides.values()))
        what = f"{doc.source} (with {overrides})" if overrides else doc.source
        try:
            raise_problems(validation_problems(doc, exc), what=what)
        except ConfigError as error:
            message = error.message
            if warnings:
                message += "\nwarnings:\n" + "\n".join(f"  {w}" for w in warnings)
            raise ConfigError(
                message, hint="fix the keys named above, then run: stackyard config check"
            ) from exc
        raise  # unreachable: raise_problems raised
