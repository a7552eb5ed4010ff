"""Reading a build context's files for auto-dockerize: text, JSON and TOML, with errors that
name the file. Used by the Python and Node detections.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from stackyard.errors import UsageError


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from exc


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object")
    return data


def first_line(path: Path) -> str:
    """The first line that is neither blank nor a comment (``.python-version``, ``.nvmrc``)."""
    for line in read_text(path).splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            return text
    return ""


def table(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``data[k1][k2]...`` when each level is a table, else an empty dict."""
    for key in keys:
        found = data.get(key)
        if not isinstance(found, dict):
            return {}
        data = found
    return data
