"""A failed default build names the Dockerfile's line: the legacy builder's step numbers
mapped to where each instruction starts."""

from __future__ import annotations

from stackyard.images.dockerfile_lines import step_place
from stackyard.images.dockerproxy.dockerfile import instruction_lines

MULTI_STAGE = """\
# syntax and comments are not steps

FROM python:3.11-slim AS build
RUN pip install \\
    # a comment inside a continuation is dropped
    flask \\

    gunicorn
COPY . /app

FROM busybox:latest
COPY --from=build /app /app
CMD ["sh", "-c", \\
     "exec httpd"]
"""


def test_each_instruction_starts_on_its_own_line_across_stages() -> None:
    assert instruction_lines(MULTI_STAGE.encode()) == [3, 4, 9, 11, 12, 13]


def test_an_escape_directive_changes_the_continuation_character() -> None:
    text = "# escape=`\nFROM windows\nRUN dir `\n  c:\\\nCOPY a b\n"
    assert instruction_lines(text.encode()) == [2, 3, 5]
    # a directive after the first comment or instruction is a comment
    assert instruction_lines(b"# hello\n# escape=`\nFROM x\nRUN a `\nRUN b\n") == [3, 4, 5]


def test_the_failed_step_is_named_by_file_line_and_instruction() -> None:
    text = b'FROM busybox:latest\nCOPY www /www\n\nCMD ["sh"]\nRUN false\n'
    assert step_place("Dockerfile", text, "Step 4/4 : RUN false") == (
        "Dockerfile:5 (step 4/4: RUN false)"
    )
    long = "RUN " + "x" * 200
    assert step_place("Dockerfile", text, f"Step 4/4 : {long}").endswith("...)")
    # a file with fewer instructions (changed since) keeps the step, not a wrong line
    assert step_place("Dockerfile", b"FROM x\n", "Step 4/4 : RUN false") == (
        "Dockerfile (step 4/4: RUN false)"
    )
