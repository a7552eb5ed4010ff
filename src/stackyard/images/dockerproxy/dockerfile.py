"""The images a Dockerfile makes its build read: each FROM, COPY --from and RUN --mount
from= that names no build stage, with the line that names it.

dockerfile-parse turns the lines into instructions (continuations, comments, the escape
directive). Its variable substitution knows neither ``${X:-word}`` nor ``${X:+word}``, so
the words are read here as the legacy builder (Docker 20.10) reads them: flags first
(``--name=value``, quotes and escapes as the builder's flag reader takes them), FROM's
image with the global ARGs substituted (their defaults, or the build's build-args) by the
builder's shell-word rules, and a flag's value literally (the legacy builder does not
expand ``--from``: measured, ``COPY --from=$X`` fails as an invalid reference). Whatever
the builder itself would reject (an unknown substitution modifier, an open quote) is an
error here too, so no reading of a Dockerfile can differ from the builder's in silence.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from dockerfile_parse import DockerfileParser

from stackyard.errors import UsageError

# A parser directive as the builder reads one (Go's \s), and dockerfile-parse's escape.
_GO_SPACE = "[\t\n\f\r ]*"
_BUILDER_DIRECTIVE = re.compile(
    f"^#{_GO_SPACE}([a-zA-Z][a-zA-Z0-9]*){_GO_SPACE}={_GO_SPACE}(.+?){_GO_SPACE}$"
)
_PARSER_ESCAPE = re.compile(r"^\s*#\s*escape\s*=", re.I)
_STAGE_INDEX = re.compile(r"^[+-]?[0-9]+$")
# What an image reference or id may hold at all (the proxy asks the engine about it by
# path, so nothing that could climb or end the path); the engine rejects the rest itself.
_IMAGE_CHARS = re.compile(r"^[A-Za-z0-9._/:@-]+$")
_BOM = b"\xef\xbb\xbf"

Kind = Literal["FROM", "COPY --from", "RUN --mount from"]


class DockerfileError(UsageError):
    """A Dockerfile the proxy cannot read as the builder would."""


@dataclass(frozen=True)
class NamedImage:
    """One image a Dockerfile names: where (1-based line, the instruction as written),
    how, and the name as the builder resolves it. ``stages``: the stages begun before it
    (lower-case names, "" for an unnamed one), which a base image's ONBUILD triggers see."""

    line: int
    text: str
    kind: Kind
    name: str
    stages: tuple[str, ...] = ()


def named_images(dockerfile: bytes, build_args: Mapping[str, str | None]) -> list[NamedImage]:
    """The images ``dockerfile`` names, in order, stages and ``scratch`` left out."""
    data = dockerfile.removeprefix(_BOM).decode("utf-8", "replace").encode()
    escape = _escape_token(data)
    lines = io.BytesIO(_as_builder_reads(data, escape))
    parser = DockerfileParser(fileobj=lines, env_replace=False)
    meta: dict[str, str] = {}  # the global ARGs (before the first FROM)
    stages: list[str] = []
    found: list[NamedImage] = []
    for instruction in parser.structure:
        kind = str(instruction["instruction"])
        value = str(instruction["value"] or "")
        line = int(instruction["startline"]) + 1
        text = " ".join(str(instruction["content"]).split())
        try:
            if kind == "ARG" and not stages:
                meta.update(_global_args(value, meta, build_args, escape))
            elif kind == "FROM":
                image, stage = _from(value, meta, escape)
                if image != "scratch" and image not in stages:
                    found.append(NamedImage(line, text, "FROM", image, tuple(stages)))
                stages.append(stage)
            elif kind in ("COPY", "RUN") and stages:
                found += _flag_images(kind, value, line, text, stages[:-1])
        except DockerfileError as exc:
            raise DockerfileError(f"line {line} ({_short(text)}): {exc}") from exc
    for each in found:
        _check_name(each)
    return found


def instruction_lines(dockerfile: bytes) -> list[int]:
    """The 1-based line each instruction starts on, in file order across every stage: the
    legacy builder's steps ("Step 4/6"), whose failure is then named by its line."""
    data = dockerfile.removeprefix(_BOM).decode("utf-8", "replace").encode()
    lines = io.BytesIO(_as_builder_reads(data, _escape_token(data)))
    parser = DockerfileParser(fileobj=lines, env_replace=False)
    return [
        int(instruction["startline"]) + 1
        for instruction in parser.structure
        if instruction["instruction"] != "COMMENT"  # dockerfile-parse lists comments too
    ]


def frontend_directive(dockerfile: bytes) -> tuple[int, str] | None:
    """The ``# syntax=`` directive BuildKit's Dockerfile frontend hands the build to (its
    line and text), read as BuildKit 0.8 reads directives: leading lines of the directive
    form, the last ``syntax`` winning (a byte order mark is skipped, to err on the side
    of finding one)."""
    found: tuple[int, str] | None = None
    text = dockerfile.removeprefix(_BOM).decode("utf-8", "replace")
    for number, line in enumerate(text.split("\n"), start=1):
        match = _BUILDER_DIRECTIVE.match(line.removesuffix("\r"))
        if match is None:
            break
        if match.group(1).lower() == "syntax":
            found = (number, _short(line.strip()))
    return found


def _check_name(image: NamedImage) -> None:
    if not _IMAGE_CHARS.match(image.name) or ".." in image.name or "//" in image.name:
        raise DockerfileError(
            f"line {image.line} ({_short(image.text)}): {image.name!r} is not an image name"
        )


def trigger_images(triggers: Sequence[str], base: NamedImage) -> list[NamedImage]:
    """The images the ONBUILD triggers of ``base`` (its image's ``Config.OnBuild``) name:
    they run at the start of the stage that FROM begins."""
    found: list[NamedImage] = []
    for trigger in triggers:
        kind, _, value = trigger.strip().partition(" ")
        text = f"{base.text}, whose image runs ONBUILD {_short(trigger)}"
        if kind.upper() in ("COPY", "RUN"):
            found += _flag_images(kind.upper(), value, base.line, text, list(base.stages))
    for image in found:
        _check_name(image)
    return found


def _flag_images(
    kind: str, value: str, line: int, text: str, stages: Sequence[str]
) -> list[NamedImage]:
    found: list[NamedImage] = []
    for flag in _flags(value):
        name, _, flag_value = flag.removeprefix("--").partition("=")
        if kind == "COPY" and name == "from":
            images = [flag_value]
            how: Kind = "COPY --from"
        elif kind == "RUN" and name == "mount":
            images = _mount_sources(flag_value)
            how = "RUN --mount from"
        else:
            continue
        found += [
            NamedImage(line, text, how, image)
            for image in images
            if image and not _is_stage(image, stages)
        ]
    return found


def _is_stage(name: str, stages: Sequence[str]) -> bool:
    """A stage's index (the builder never reads an image for one: out of range is its
    error) or the name of a stage begun before."""
    return bool(_STAGE_INDEX.match(name)) or name.lower() in [s for s in stages if s]


def _mount_sources(value: str) -> list[str]:
    """The ``from=`` of one ``--mount`` (CSV of key=value)."""
    try:
        fields = next(csv.reader([value]), [])
    except csv.Error as exc:
        raise DockerfileError(f"its --mount is not a list of key=value: {exc}") from exc
    sources = []
    for field in fields:
        key, _, found = field.partition("=")
        if key.strip().lower() == "from":
            sources.append(found)
    return sources


def _from(value: str, meta: Mapping[str, str], escape: str) -> tuple[str, str]:
    """FROM's image (global ARGs substituted) and its stage name ("" when unnamed)."""
    rest = _rest_after_flags(value)
    words = rest.split()
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise DockerfileError("FROM takes an image and, optionally, AS and a stage name")
    image = expand(words[0], meta, escape)
    if not image:
        raise DockerfileError("FROM names an empty image")
    return image, words[2].lower() if len(words) == 3 else ""


def _global_args(
    value: str, meta: Mapping[str, str], build_args: Mapping[str, str | None], escape: str
) -> dict[str, str]:
    """``ARG name[=default] ...`` before the first FROM: a build-arg wins over the default;
    an ARG with neither stays unset."""
    found: dict[str, str] = {}
    for word in _words(value, escape):
        name, has_default, default = word.partition("=")
        given = build_args.get(name)
        if given is not None:
            found[name] = given
        elif has_default:
            found[name] = expand(default, {**meta, **found}, escape)
    return found


def _words(value: str, escape: str) -> list[str]:
    """Whitespace-separated words, quotes kept together (ARG's name=value pairs)."""
    words, word, quote, escaped = [], "", "", False
    for ch in value:
        if escaped:
            word, escaped = word + ch, False
        elif ch == escape and quote != "'":
            word, escaped = word + ch, True
        elif quote:
            word += ch
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            word, quote = word + ch, ch
        elif ch.isspace():
            if word:
                words.append(word)
            word = ""
        else:
            word += ch
    if quote:
        raise DockerfileError("a quote is not closed")
    return [*words, word] if word else words


def _flags(value: str) -> list[str]:
    """The ``--flag`` words at the start of an instruction's arguments."""
    return _split_flags(value)[0]


def _rest_after_flags(value: str) -> str:
    return _split_flags(value)[1]


def _split_flags(line: str) -> tuple[list[str], str]:
    """The builder's flag reader (extractBuilderFlags): leading words that start with
    ``--``, with quotes removed and backslash escapes taken, then the rest of the line."""
    words: list[str] = []
    word, quote, blank_ok, phase = "", "", False, "spaces"
    pos = 0
    while pos <= len(line):
        ch = line[pos] if pos < len(line) else ""
        if phase == "spaces":
            if pos == len(line):
                break
            if ch.isspace():
                pos += 1
                continue
            if not line.startswith("--", pos):
                return words, line[pos:]
            phase = "word"
        if pos == len(line):
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if ch.isspace():
                phase = "spaces"
                if word == "--":
                    return words, line[pos:]
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
            elif ch in "'\"":
                quote, blank_ok, phase = ch, True, "quote"
            elif ch == "\\":
                if pos + 1 < len(line):
                    pos += 1
                    word += line[pos]
            else:
                word += ch
        elif ch == quote:
            phase = "word"
        elif ch == "\\":
            if pos + 1 == len(line):
                phase = "word"
            else:
                pos += 1
                word += line[pos]
        else:
            word += ch
        pos += 1
    return words, ""


def expand(word: str, variables: Mapping[str, str], escape: str = "\\") -> str:
    """One word as the builder's shell lexer reads it (ProcessWord): quotes removed,
    escapes taken, ``$X``, ``${X}``, ``${X:-word}`` and ``${X:+word}`` substituted (an
    unset variable is empty)."""
    return _Lexer(word, variables, escape).until("")


class _Lexer:
    def __init__(self, word: str, variables: Mapping[str, str], escape: str) -> None:
        self.text = word
        self.pos = 0
        self.variables = variables
        self.escape = escape

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1 if ch else 0
        return ch

    def until(self, stop: str) -> str:
        out: list[str] = []
        while self._peek():
            ch = self._peek()
            if stop and ch == stop:
                self._next()
                return "".join(out)
            if ch == self.escape:
                self._next()
                out.append(self._next())
            elif ch == "'":
                out.append(self._single_quoted())
            elif ch == '"':
                out.append(self._double_quoted())
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(self._next())
        if stop:
            raise DockerfileError(f"a substitution is not closed with {stop!r}")
        return "".join(out)

    def _single_quoted(self) -> str:
        self._next()
        out = []
        while (ch := self._next()) != "'":
            if not ch:
                raise DockerfileError("a single quote is not closed")
            out.append(ch)
        return "".join(out)

    def _double_quoted(self) -> str:
        self._next()
        out = []
        while (ch := self._peek()) != '"':
            if not ch:
                raise DockerfileError("a double quote is not closed")
            if ch == "$":
                out.append(self._dollar())
                continue
            self._next()
            if ch == self.escape and self._peek() in ('"', "$", self.escape) and self._peek():
                ch = self._next()
            out.append(ch)
        self._next()
        return "".join(out)

    def _dollar(self) -> str:
        self._next()
        if self._peek() != "{":
            name = self._name()
            return self.variables.get(name, "") if name else "$"
        self._next()
        name = self._name()
        ch = self._next()
        if ch == "}":
            return self.variables.get(name, "")
        if ch != ":":
            raise DockerfileError(f"${{{name}{ch}...}} is not a substitution the builder takes")
        modifier = self._next()
        word = self.until("}")
        value = self.variables.get(name, "")
        if modifier == "-":
            return value or word
        if modifier == "+":
            return word if value else value
        raise DockerfileError(f"${{{name}:{modifier}...}}: the builder takes only :- and :+")

    def _name(self) -> str:
        start = self.pos
        if self._peek().isdigit():
            while self._peek().isdigit():
                self._next()
            return self.text[start : self.pos]
        while (ch := self._peek()) and (ch.isalnum() or ch == "_"):
            self._next()
        return self.text[start : self.pos]


def _as_builder_reads(data: bytes, escape: str) -> bytes:
    """The lines as dockerfile-parse must see them to join them as the builder does:
    a blank line inside a continuation is skipped by the builder (dockerfile-parse would
    end the instruction there), so it becomes a comment line (which both skip); and a
    line that ends with the escape character and whitespace other than spaces and tabs
    does not continue for the builder (it does for dockerfile-parse), so it gets one more
    character. The builder's escape character is written as a directive on the first line
    (where, with "`", directives are) and any other escape directive made a comment, so
    dockerfile-parse takes the same one. Line numbers stay."""
    lines = data.decode().split("\n")
    for number, line in enumerate(lines):
        text = line.removesuffix("\r")
        if number == 0 and escape != "\\":  # the top is all directives then
            lines[number] = f"# escape={escape}"  # where and as dockerfile-parse reads it
        elif _PARSER_ESCAPE.match(text) or not text.strip():
            lines[number] = "#"
        elif (
            not text.lstrip().startswith("#")
            and text.rstrip().endswith(escape)
            and not re.search(re.escape(escape) + r"[ \t]*$", text)
        ):
            lines[number] = text + "."
    return "\n".join(lines).encode()


def _escape_token(data: bytes) -> str:
    """The escape character as the builder takes it: ``\\`` unless an ``# escape=``
    directive says "`". Directives (``escape``, ``syntax``) count only at the top: the
    first line that is not one ends them."""
    for raw in data.split(b"\n"):
        line = raw.decode().removesuffix("\r").lstrip()
        found = _BUILDER_DIRECTIVE.match(line)
        if found is None or found[1].lower() not in ("escape", "syntax"):
            break
        if found[1].lower() == "escape":
            if found[2] not in ("\\", "`"):
                raise DockerfileError(f"the escape directive's {found[2]!r} is not \\ or `")
            return found[2]
    return "\\"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
