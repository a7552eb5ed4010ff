"""Keep docs/stackyard-yml.md and docs/examples/stackyard.yml honest about the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stackyard.config.loading import load_stack_config
from stackyard.config.reference import documented_fields, render_reference
from stackyard.config.yamlfile import load_yaml_file

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "stackyard-yml.md"
EXAMPLE = ROOT / "docs" / "examples" / "stackyard.yml"
REGENERATE = ".venv/bin/python scripts/gen-config-reference"


def test_every_field_has_a_description_and_an_example() -> None:
    missing = [
        item.key_path
        for item in documented_fields()
        if not (item.info.description and item.info.description.strip())
    ]
    assert not missing, f"fields without description=: {missing}"
    no_example = [item.key_path for item in documented_fields() if not item.info.examples]
    assert not no_example, f"fields without examples=[...]: {no_example}"


def test_reference_is_up_to_date() -> None:
    expected = render_reference(EXAMPLE.read_text(encoding="utf-8"))
    current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert current == expected, f"{REFERENCE} is out of date; regenerate it with: {REGENERATE}"


def test_reference_documents_every_field() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for item in documented_fields():
        assert f"### `{item.key_path}`" in text


def _key_paths(data: Any, prefix: str = "") -> set[str]:
    """Dotted key paths in YAML data, with list items as ``[]`` as in the reference."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}{key}"
            found.add(path)
            if key != "variables":  # variable names are the user's, not keys of the model
                found |= _key_paths(value, path + ".")
    elif isinstance(data, list):
        for item in data:
            found |= _key_paths(item, prefix.removesuffix(".") + "[].")
    return found


def test_example_is_valid_without_warnings() -> None:
    loaded = load_stack_config(EXAMPLE.parent, file=EXAMPLE.name)
    assert [str(w) for w in loaded.warnings] == []
    assert len(loaded.config.stages) >= 2


def test_example_uses_every_field() -> None:
    used = _key_paths(load_yaml_file(EXAMPLE).data)
    missing = [item.key_path for item in documented_fields() if item.key_path not in used]
    assert not missing, f"{EXAMPLE} does not show: {missing}"
