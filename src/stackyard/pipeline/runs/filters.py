"""The monorepo path filter of a run: skip it when no change touches ``build.paths``.

``build.paths`` is read from the commit's stackyard.yml through the config loader (the
same YAML reading and models as everywhere else), before anything is checked out. A file
that does not load filters nothing: the build then reports it with file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from stackyard.config.models import StackConfig
from stackyard.config.yamlfile import load_yaml
from stackyard.errors import ConfigError
from stackyard.source.base import matches_paths


@dataclass(frozen=True)
class PathFilter:
    paths: tuple[str, ...] = ()  # empty: every change starts a run
    problem: str = ""  # why the file could not be read for its filter


def path_filter(raw: bytes | None, where: str) -> PathFilter:
    """``build.paths`` of the stackyard.yml text ``raw`` (None: the commit has none)."""
    if raw is None:
        return PathFilter()
    try:
        document = load_yaml(raw.decode("utf-8"), where)
        config = StackConfig.model_validate(document.data or {})
    except ConfigError as exc:
        return PathFilter(problem=exc.message.splitlines()[0])
    except UnicodeDecodeError:
        return PathFilter(problem=f"{where}: not UTF-8 text")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the file"
        return PathFilter(problem=f"{where}: {field}: {first['msg']}")
    return PathFilter(tuple(config.build.paths or ()))


def skip_reason(found: PathFilter, changed: list[str]) -> str | None:
    """Why the run is SKIPPED, or None when a change touches the filter (or there is none)."""
    if not found.paths or matches_paths(changed, found.paths):
        return None
    return (
        f"no change touches build.paths ({', '.join(found.paths)}); "
        f"changed: {', '.join(changed[:10]) or 'nothing'}"
    )
