"""Auto-dockerize: detect an app's framework in a build context and generate its Dockerfile.

Pure decisions only (no process, no network): the builder and ``stackyard dockerize`` call it.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stackyard.errors import UsageError

Kind = Literal["fastapi", "flask", "django", "node", "static", "procfile"]

FRAMEWORKS: tuple[Kind, ...] = ("fastapi", "django", "flask")
"""Python frameworks in the order they win when a project lists several."""

BIND = "${HOST:-0.0.0.0}:${PORT}"
"""Where generated servers listen: the platform passes HOST=127.0.0.1 in host network mode."""

LOOKED_FOR = (
    "a Dockerfile",
    "a Procfile with a web: line",
    "requirements.txt or pyproject.toml listing fastapi, flask or django",
    "package.json with scripts.start",
    "index.html",
)

_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.*?)\s*$")
_SETTINGS_MODULE = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""")
_ENTRY_CANDIDATES = (
    "main.py",
    "app.py",
    "application.py",
    "server.py",
    "api.py",
    "asgi.py",
    "wsgi.py",
    "app/main.py",
    "app/app.py",
    "app/__init__.py",
    "src/*/main.py",
    "src/*/app.py",
    "src/*/__init__.py",
    "*/main.py",
    "*/app.py",
    "*/__init__.py",
)


@dataclass(frozen=True)
class BaseImages:
    """Base image names for generated Dockerfiles (a setting: change them per platform)."""

    python: str = "python:3.11-slim"
    node: str = "node:20-slim"
    static: str = "busybox:latest"


@dataclass(frozen=True)
class Detection:
    """What was detected in a build context, why, how it starts, and the Dockerfile for it."""

    kind: Kind
    evidence: tuple[str, ...]
    command: str
    dockerfile: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "evidence": list(self.evidence),
            "command": self.command,
            "dockerfile": self.dockerfile,
        }


@dataclass(frozen=True)
class EntryPoint:
    """A Python app object: ``module:variable``, importable from ``app_dir`` (None: /app)."""

    module: str
    variable: str
    source: str
    app_dir: str | None = None

    @property
    def target(self) -> str:
        return f"{self.module}:{self.variable}"


@dataclass(frozen=True)
class PythonProject:
    """A Python project's dependency names and how to install them."""

    dependency_file: str
    names: frozenset[str]
    copy_all_first: bool


def normalize_name(name: str) -> str:
    """PEP 503 form of a distribution name: ``Flask_SQLAlchemy`` -> ``flask-sqlalchemy``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str | None:
    """The normalized name of a PEP 508 requirement, or None for a path, URL or option.

    ``fastapi[standard]>=0.1 ; python_version >= "3.8"`` -> ``fastapi``.
    """
    text = requirement.strip()
    if not text or text.startswith(("-", ".", "/")) or "://" in text.split("@")[0]:
        return None
    match = _NAME.match(text)
    return normalize_name(match.group(1)) if match else None


def detect(context: Path, *, base_images: BaseImages | None = None) -> Detection:
    """Decide what ``context`` is and return the Dockerfile to build it.

    Precedence: a Procfile ``web:`` command > a Python framework > Node > a static site.
    Raises UsageError when nothing matches, naming what was looked for.
    """
    images = base_images or BaseImages()
    python = _python_project(context)
    procfile = _procfile_web(context)
    if procfile is not None:
        return _procfile_detection(context, procfile, python, images)
    if python is not None:
        for kind in FRAMEWORKS:
            if kind in python.names:
                return _python_detection(context, kind, python, images)
    node = _node_start(context)
    if node is not None:
        return _node_detection(context, node, images)
    if (context / "index.html").is_file():
        return _static_detection(images)
    raise _nothing_detected(context, python)


# --- reading the context --------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _requirements(path: Path, seen: set[Path]) -> tuple[set[str], bool]:
    """Names listed in a requirements file, following ``-r``; and whether it needs the source."""
    seen.add(path.resolve())
    names: set[str] = set()
    needs_source = False
    text = re.sub(r"\\\n", " ", _read(path))
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        include = re.match(r"^(?:-r|--requirement|-c|--constraint)[\s=]*(\S+)", line)
        if include:
            needs_source = True
            nested = path.parent / include.group(1)
            is_include = line.startswith(("-r", "--requirement")) and nested.is_file()
            if is_include and nested.resolve() not in seen:
                names |= _requirements(nested, seen)[0]
            continue
        if line.startswith(("-e", "--editable", ".", "/", "file:")):
            needs_source = True
        name = requirement_name(line)
        if name is not None:
            names.add(name)
    return names, needs_source


def _pyproject_names(path: Path) -> set[str]:
    try:
        data = tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from exc
    names: set[str] = set()
    project = data.get("project", {})
    for requirement in project.get("dependencies", []) if isinstance(project, dict) else []:
        name = requirement_name(str(requirement))
        if name is not None:
            names.add(name)
    poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
    if isinstance(poetry, dict):
        names |= {normalize_name(key) for key in poetry if key.lower() != "python"}
    return names


def _python_project(context: Path) -> PythonProject | None:
    requirements = context / "requirements.txt"
    if requirements.is_file():
        names, needs_source = _requirements(requirements, set())
        return PythonProject("requirements.txt", frozenset(names), needs_source)
    pyproject = context / "pyproject.toml"
    if pyproject.is_file():
        return PythonProject("pyproject.toml", frozenset(_pyproject_names(pyproject)), True)
    return None


def _procfile_web(context: Path) -> str | None:
    path = context / "Procfile"
    if not path.is_file():
        return None
    for line in _read(path).splitlines():
        match = _PROCFILE_LINE.match(line.strip())
        if match and match.group(1) == "web" and match.group(2):
            return match.group(2)
    return None


def _package_json(context: Path) -> dict[str, Any] | None:
    path = context / "package.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(_read(path))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


def _node_start(context: Path) -> str | None:
    data = _package_json(context)
    scripts = data.get("scripts") if data else None
    start = scripts.get("start") if isinstance(scripts, dict) else None
    return start if isinstance(start, str) and start.strip() else None


# --- entry points ---------------------------------------------------------------------


def _candidates(context: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in _ENTRY_CANDIDATES:
        for path in sorted(context.glob(pattern)):
            if path.is_file() and path not in found:
                found.append(path)
    return found


def _module_of(context: Path, path: Path) -> tuple[str, str | None]:
    parts = list(path.relative_to(context).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    app_dir = None
    if parts[0] == "src" and len(parts) > 1:
        app_dir, parts = "src", parts[1:]
    return ".".join(parts), app_dir


def find_entry_point(context: Path, constructor: str) -> EntryPoint | None:
    """The first module that assigns ``constructor(...)`` (``FastAPI`` or ``Flask``) to a name."""
    pattern = re.compile(rf"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)?{constructor}\(", re.MULTILINE)
    for path in _candidates(context):
        match = pattern.search(_read(path))
        if match:
            module, app_dir = _module_of(context, path)
            source = path.relative_to(context).as_posix()
            return EntryPoint(module, match.group(1), source, app_dir)
    return None


def find_django_wsgi(context: Path) -> EntryPoint | None:
    """The WSGI module next to the settings that manage.py names (``project.wsgi``)."""
    manage = context / "manage.py"
    if not manage.is_file():
        return None
    match = _SETTINGS_MODULE.search(_read(manage))
    if match:
        package = match.group(1).rsplit(".", 1)[0]
        wsgi = context.joinpath(*package.split("."), "wsgi.py")
        if wsgi.is_file():
            return EntryPoint(
                f"{package}.wsgi", "application", wsgi.relative_to(context).as_posix()
            )
    for wsgi in sorted(context.glob("*/wsgi.py")):
        settings = wsgi.parent
        if (settings / "settings.py").is_file() or (settings / "settings").is_dir():
            source = wsgi.relative_to(context).as_posix()
            return EntryPoint(f"{settings.name}.wsgi", "application", source)
    return None


# --- detections -----------------------------------------------------------------------


def _python_detection(
    context: Path, kind: Kind, python: PythonProject, images: BaseImages
) -> Detection:
    evidence = [f"{python.dependency_file} lists {kind}"]
    if kind == "django":
        entry = find_django_wsgi(context)
        looked = "manage.py naming a settings package with wsgi.py, or */wsgi.py next to settings"
    else:
        entry = find_entry_point(context, "FastAPI" if kind == "fastapi" else "Flask")
        looked = "a module assigning FastAPI(...) or Flask(...) to a name in " + ", ".join(
            _ENTRY_CANDIDATES
        )
    if entry is None:
        raise UsageError(
            f"{context}: {python.dependency_file} lists {kind}, but no entry point was found "
            f"(looked for {looked})",
            hint="add a Procfile with a 'web:' line that starts the app, or a Dockerfile",
        )
    if kind == "django":
        evidence.append(f"manage.py and {entry.source} define the WSGI module {entry.module}")
    else:
        evidence.append(f"{entry.source} defines {entry.variable} = {_kind_class(kind)}(...)")
    server = "uvicorn" if kind == "fastapi" else "gunicorn"
    extra: tuple[str, ...] = ()
    if server not in python.names:
        extra = (server,)
        evidence.append(f"{python.dependency_file} does not list {server}: it is added")
    command = _server_command(kind, entry)
    return Detection(
        kind=kind,
        evidence=tuple(evidence),
        command=command,
        dockerfile=_python_dockerfile(python, images, extra, _cmd(f"exec {command}"), kind),
    )


def _kind_class(kind: Kind) -> str:
    return {"fastapi": "FastAPI", "flask": "Flask"}.get(kind, kind)


def _server_command(kind: Kind, entry: EntryPoint) -> str:
    if kind == "fastapi":
        app_dir = f" --app-dir {entry.app_dir}" if entry.app_dir else ""
        return f"uvicorn{app_dir} {entry.target} --host ${{HOST:-0.0.0.0}} --port ${{PORT}}"
    path = f" --pythonpath {entry.app_dir}" if entry.app_dir else ""
    target = entry.module if kind == "django" else entry.target
    return f"gunicorn{path} --bind {BIND} {target}"


def _procfile_detection(
    context: Path, command: str, python: PythonProject | None, images: BaseImages
) -> Detection:
    evidence = [f"Procfile has web: {command}"]
    cmd = _cmd(command)
    if python is not None:
        evidence.append(f"{python.dependency_file} is present: Python install steps")
        dockerfile = _python_dockerfile(python, images, (), cmd, "procfile")
    elif (context / "package.json").is_file():
        evidence.append("package.json is present: Node install steps")
        dockerfile = _node_dockerfile(context, images, cmd, "procfile")
    else:
        evidence.append("no requirements.txt, pyproject.toml or package.json: busybox base")
        dockerfile = _render(
            images.static,
            "procfile",
            ["WORKDIR /app", "COPY . ."],
            cmd,
        )
    return Detection("procfile", tuple(evidence), command, dockerfile)


def _node_detection(context: Path, start: str, images: BaseImages) -> Detection:
    evidence = (f"package.json has scripts.start: {start}",)
    command = "npm start"
    dockerfile = _node_dockerfile(context, images, _cmd(f"exec {command}"), "node")
    return Detection("node", evidence, command, dockerfile)


def _static_detection(images: BaseImages) -> Detection:
    command = f"busybox httpd -f -p {BIND} -h /www"
    dockerfile = _render(images.static, "static", ["COPY . /www"], _cmd(f"exec {command}"))
    return Detection("static", ("index.html is at the context root",), command, dockerfile)


def _nothing_detected(context: Path, python: PythonProject | None) -> UsageError:
    found = ""
    if python is not None:
        found = f" ({python.dependency_file} lists none of fastapi, flask or django)"
    return UsageError(
        f"{context} has no Dockerfile and nothing to generate one from{found}. "
        f"Looked for: {'; '.join(LOOKED_FOR)}",
        hint="add a Dockerfile, or one of those files (a Procfile web: line works for any app)",
    )


# --- Dockerfile text ------------------------------------------------------------------


def _cmd(command: str) -> str:
    """Exec-form CMD through ``sh -c``, so $PORT and $HOST expand when the task starts."""
    return "CMD " + json.dumps(["sh", "-c", command])


def _render(base: str, kind: Kind, steps: list[str], cmd: str) -> str:
    lines = [
        f"# Generated by stackyard dockerize ({kind}): the app listens on {BIND}.",
        f"FROM {base}",
        *steps,
        "ENV PORT=8080",
        cmd,
    ]
    return "\n".join(lines) + "\n"


def _python_dockerfile(
    python: PythonProject, images: BaseImages, extra: tuple[str, ...], cmd: str, kind: Kind
) -> str:
    # A venv works on the official image and on Debian's PEP 668 "externally managed" python3.
    steps = [
        "WORKDIR /app",
        "RUN python3 -m venv /venv",
        "ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
    ]
    packages = " ".join(extra)
    if python.dependency_file == "pyproject.toml":
        install = f"RUN pip install --no-cache-dir . {packages}".rstrip()
    else:
        install = f"RUN pip install --no-cache-dir -r requirements.txt {packages}".rstrip()
    if python.copy_all_first:
        steps += ["COPY . .", install]
    else:
        steps += ["COPY requirements.txt ./", install, "COPY . ."]
    return _render(images.python, kind, steps, cmd)


def _node_dockerfile(context: Path, images: BaseImages, cmd: str, kind: Kind) -> str:
    if (context / "package-lock.json").is_file():
        steps = ["COPY package.json package-lock.json ./", "RUN npm ci --omit=dev"]
    else:
        steps = ["COPY package.json ./", "RUN npm install --omit=dev"]
    return _render(
        images.node, kind, ["WORKDIR /app", "ENV NODE_ENV=production", *steps, "COPY . ."], cmd
    )
