"""Where each step of a ``docker build`` is in its Dockerfile, so a failed build names the
file and line ("Dockerfile:6"), not only the engine's "Step 4/4 : RUN false".

The legacy builder numbers its steps by instruction, across every stage, in file order.
An instruction is a line that is not blank and not a comment, with the lines its escape
character (``\\``, or what an ``# escape=`` parser directive says) continues; comment and
blank lines inside a continuation are skipped, as Docker's parser does.
"""

from __future__ import annotations

import re

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(\S+)\s*$")
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def instruction_lines(text: str) -> list[int]:
    """The 1-based line number each instruction of the Dockerfile ``text`` starts on."""
    lines = text.splitlines()
    escape = _escape_of(lines)
    found: list[int] = []
    continued = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # in a continuation too: Docker drops such lines there
        if not continued:
            found.append(number)
        continued = line.endswith(escape)
    return found


def _escape_of(lines: list[str]) -> str:
    """The escape character: ``\\``, unless a parser directive at the top says otherwise."""
    for raw in lines:
        match = _DIRECTIVE.match(raw.strip())
        if match is None:
            break  # directives end at the first line that is not one
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            return match.group(2)
    return "\\"


def step_place(dockerfile: str, text: str, step_line: str) -> str:
    """``Dockerfile:6 (step 4/4: RUN false)`` for the builder's ``Step 4/4 : RUN false``
    line; without the line number when the file does not have that many instructions."""
    match = STEP.match(step_line.strip())
    if match is None:
        return dockerfile
    number, total, instruction = int(match.group(1)), match.group(2), match.group(3)
    if len(instruction) > 80:
        instruction = instruction[:77] + "..."
    starts = instruction_lines(text)
    where = f"{dockerfile}:{starts[number - 1]}" if 0 < number <= len(starts) else dockerfile
    return f"{where} (step {number}/{total}: {instruction})"
