"""Durations people type: ``30d``, ``12h``, ``90m``, ``2w`` (token expiry, ``audit --since``)."""

from __future__ import annotations

import re
from datetime import timedelta

from stackyard.errors import UsageError

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, field: str) -> timedelta:
    """``text`` as a positive duration; UsageError naming ``field`` otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(
            f"{field}: '{text}' is not a duration",
            hint="write a number and a unit: s, m, h, d or w (e.g. 30d, 12h)",
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
