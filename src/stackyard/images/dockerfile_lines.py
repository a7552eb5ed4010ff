"""Where each step of a ``docker build`` is in its Dockerfile, so a failed build names the
file and line ("Dockerfile:6"), not only the engine's "Step 4/4 : RUN false".

The legacy builder numbers its steps by instruction, across every stage, in file order;
the line each instruction starts on is read as the build proxy reads Dockerfiles
(``dockerproxy.dockerfile.instruction_lines``: dockerfile-parse, made to join lines as the
builder does).
"""

from __future__ import annotations

import re

from stackyard.images.dockerproxy.dockerfile import DockerfileError, instruction_lines

STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def step_place(dockerfile: str, text: bytes, step_line: str) -> str:
    """``Dockerfile:6 (step 4/4: RUN false)`` for the builder's ``Step 4/4 : RUN false``
    line; without the line number when the file does not have that many instructions (it
    changed under the build) or cannot be read as the builder reads it."""
    match = STEP.match(step_line.strip())
    if match is None:
        return dockerfile
    number, total, instruction = int(match.group(1)), match.group(2), match.group(3)
    if len(instruction) > 80:
        instruction = instruction[:77] + "..."
    try:
        starts = instruction_lines(text)
    except DockerfileError:
        starts = []
    where = f"{dockerfile}:{starts[number - 1]}" if 0 < number <= len(starts) else dockerfile
    return f"{where} (step {number}/{total}: {instruction})"
