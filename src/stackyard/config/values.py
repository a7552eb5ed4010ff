"""The value types of stackyard.yml: names, paths, durations and memory sizes.

The models (models.py) annotate their fields with these; each rejects a bad value with a
message that says what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Strict, WithJsonSchema

from stackyard.engines.constraints import parse_constraint

MIN_MEMORY_BYTES = 6 * 1024**2  # Docker refuses a memory limit below 6 MiB.

# Variables the platform sets in builds, releases and tasks; a user cannot override them.
RESERVED_VARIABLES = frozenset(
    {
        "STACK_NAME",
        "STAGE_NAME",
        "PREVIOUS_STAGE_NAME",
        "COMMIT_SHA",
        "REGISTRY_ENDPOINT",
        "IMAGE_URL",
        "ARTIFACTS_DIR",
        "ECR_ENDPOINT",
        "ECR_IMAGE_URL",
        "S3_BUCKET",
        "STAGE_REGION",
        "REGIONAL_ECR_ENDPOINT",
        "REGIONAL_ECR_IMAGE_URL",
        "SERVICE_NAME",
    }
)
RESERVED_PREFIX = "CODEBUILD_"

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_STAGE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|(b))?", re.IGNORECASE)
_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m)")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class DocType:
    """How the reference doc names a field's type when the annotation alone says too little."""

    text: str


def _check_variable_name(name: str) -> str:
    if not _VARIABLE_NAME.fullmatch(name):
        raise ValueError(
            f"'{name}' is not a valid variable name: use letters, digits and _, "
            "and do not start with a digit"
        )
    if name in RESERVED_VARIABLES or name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"'{name}' is set by Stackyard and cannot be overridden; pick another name"
        )
    return name


def _variable_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        raise ValueError('a variable needs a value; write "" for an empty one')
    if isinstance(value, dict | list):
        raise ValueError("a variable value must be a string or number, not a mapping or list")
    return value


def _check_stage_name(name: str) -> str:
    if len(name) > 63 or not _STAGE_NAME.fullmatch(name):
        raise ValueError(
            f"'{name}' is not a valid stage name: use 1 to 63 lowercase letters, digits and "
            "'-', starting with a letter or digit"
        )
    if name == "latest":
        raise ValueError("'latest' is the tag of the newest build; pick another stage name")
    return name


def _check_target_name(name: str) -> str:
    if len(name) > 63 or not _STAGE_NAME.fullmatch(name):
        raise ValueError(
            f"'{name}' is not a valid target name: targets are named with 1 to 63 lowercase "
            "letters, digits and '-', starting with a letter or digit (see: stackyard targets)"
        )
    return name


def _check_stack_name(name: str) -> str:
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise ValueError(
            f"'{name}' is not a valid stack name: use 1 to 63 lowercase letters, digits and "
            "'-', not starting or ending with '-'"
        )
    return name


def check_host(host: str) -> str:
    labels = host.split(".")
    if len(host) > 253 or not all(len(lb) <= 63 and _DNS_LABEL.fullmatch(lb) for lb in labels):
        raise ValueError(
            f"'{host}' is not a valid host name: use lowercase labels of letters, digits and "
            "'-' separated by dots, such as app.example.com"
        )
    if labels[-1].isdigit():  # no top-level domain is all digits: an IP address
        raise ValueError(
            f"'{host}' is an IP address, not a host name: routes by host name need a DNS "
            "name (such as app.example.com); without one, leave the stage on its port"
        )
    return host


def _check_relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"'{value}' must be a path inside the repository: relative, without '..'")
    return value


def _check_container_path(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(
            f"'{value}' must be an absolute path inside the container, such as /app/.env"
        )
    return value


def memory_bytes(value: str | int) -> int:
    """Bytes in a Docker-style size: ``256m``, ``1g``, ``1.5GiB``; a bare number is bytes."""
    match = _MEMORY.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(
            f"'{value}' is not a memory size: write a number and a unit, such as 256m or 1g "
            "(units b, k, m, g, t; 1k = 1024 bytes)"
        )
    number, unit, byte_unit = match.groups()
    return int(float(number) * _UNITS[(unit or byte_unit or "").lower()])


def _check_memory(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value  # the str type check below reports it
    size = memory_bytes(value)
    if size < MIN_MEMORY_BYTES:
        raise ValueError(
            f"'{value}' is {size} bytes, below Docker's minimum of 6m; write a unit, such as 256m"
        )
    return str(value).strip()


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        match = _SECONDS.fullmatch(value.strip())
        if match is None:
            raise ValueError(
                f"'{value}' is not a duration: write seconds as a number, or a string such as "
                "500ms, 5s or 1m"
            )
        number, unit = match.groups()
        return float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    return value


VariableName = Annotated[str, AfterValidator(_check_variable_name)]
VariableValue = Annotated[str, BeforeValidator(_variable_value)]
Variables = Annotated[
    dict[VariableName, VariableValue],
    DocType("mapping of variable name to string"),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }
    ),
]
StageName = Annotated[
    str,
    AfterValidator(_check_stage_name),
    DocType("string: a lowercase DNS label"),
    WithJsonSchema({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 63}),
]
TargetName = Annotated[
    str,
    AfterValidator(_check_target_name),
    DocType("string: a target's name"),
    WithJsonSchema({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 63}),
]
RepoPath = Annotated[str, AfterValidator(_check_relative_path), DocType("path in the repository")]
Memory = Annotated[
    str,
    BeforeValidator(_check_memory),
    DocType("memory size"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([kmgtKMGT][iI]?[bB]?|[bB])?$"},
                {"type": "integer", "minimum": MIN_MEMORY_BYTES},
            ]
        }
    ),
]
Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    Strict(),
    DocType("duration in seconds"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m)$"},
            ]
        }
    ),
]
StrictInt = Annotated[int, Strict()]
StackName = Annotated[str, AfterValidator(_check_stack_name)]
HostName = Annotated[str, AfterValidator(check_host)]
ContainerPath = Annotated[str, AfterValidator(_check_container_path)]
PathPattern = Annotated[str, AfterValidator(_check_relative_path)]
StrictFloat = Annotated[float, Strict()]


def _check_constraint(value: str) -> str:
    parse_constraint(value)  # ValueError says what is wrong
    return value


Constraint = Annotated[
    str, Strict(), AfterValidator(_check_constraint), DocType("Swarm constraint")
]
