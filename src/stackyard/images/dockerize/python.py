"""Python apps for auto-dockerize: dependencies and lock files, the Python version, entry
points (app objects and factories), Django's static files and settings, native packages.

Pure decisions over the context's files; ``stackyard.images.dockerize.detect`` calls them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stackyard.errors import UsageError
from stackyard.images.dockerize.files import first_line, read_text, read_toml, table
from stackyard.images.dockerize.model import BaseImages, Detection, Kind
from stackyard.images.dockerize.render import (
    BIND,
    BIND_HOST,
    Stage,
    apt_install,
    dockerfile,
    shell_cmd,
)
from stackyard.images.dockerize.versions import Pin, choose

FRAMEWORKS: tuple[Kind, ...] = ("fastapi", "django", "flask")
"""Python frameworks in the order they win when a project lists several."""

LockTool = Literal["poetry", "uv", "pipenv"]

TOOLS: dict[LockTool, str] = {"poetry": "2.5.1", "uv": "0.13.9", "pipenv": "2026.10.3"}
"""The version of each lock file's tool a generated Dockerfile installs (pinned)."""

LOCK_FILES: tuple[tuple[str, LockTool, str], ...] = (
    ("poetry.lock", "poetry", "pyproject.toml"),
    ("uv.lock", "uv", "pyproject.toml"),
    ("Pipfile.lock", "pipenv", "Pipfile"),
)


@dataclass(frozen=True)
class NativePackage:
    """What a Python package with C extensions needs from Debian to build, and to run."""

    build: tuple[str, ...]
    runtime: tuple[str, ...]


NATIVE: dict[str, NativePackage] = {
    "psycopg2": NativePackage(("gcc", "libc6-dev", "libpq-dev"), ("libpq5",)),
    "mysqlclient": NativePackage(
        ("gcc", "libc6-dev", "pkg-config", "default-libmysqlclient-dev"), ("libmariadb3",)
    ),
    "pyodbc": NativePackage(("g++", "libc6-dev", "unixodbc-dev"), ("unixodbc",)),
    "uwsgi": NativePackage(("gcc", "libc6-dev"), ()),
}
"""Well-known packages that compile against system libraries: built in a build stage with a
compiler and headers; the final stage gets only the run-time libraries."""

_HEADERS = (
    '{ python3 -c "import os, sysconfig, sys; '
    "sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))\""
    " || apt-get install -y --no-install-recommends python3-dev; }"
)
"""Python's headers, when the base image lacks them (the official images have them)."""

_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_SETTINGS_MODULE = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""")
_ENV_READ = (
    r"""(?:os\.environ\.get|os\.getenv|os\.environ\[|env(?:\.list|\.str)?)\(?\s*["'](\w+)["']"""
)
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
class PythonProject:
    """A Python project's dependency names, how to install them, and what pins its version."""

    dependency_file: str
    names: frozenset[str]
    copy_all_first: bool
    lock: LockTool | None = None
    lock_file: str | None = None
    pins: tuple[Pin, ...] = ()


@dataclass(frozen=True)
class EntryPoint:
    """A Python app: ``module:variable`` (or a factory), importable from ``app_dir``."""

    module: str
    variable: str
    source: str
    app_dir: str | None = None
    factory: bool = False

    @property
    def target(self) -> str:
        return f"{self.module}:{self.variable}"


@dataclass(frozen=True)
class DjangoSettings:
    """What the generated Dockerfile needs to know from a Django settings module."""

    source: str
    static_root: bool
    secret_variable: str | None  # read from the environment with no default
    allowed_hosts_variables: tuple[str, ...]


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


# --- the project ------------------------------------------------------------------------


def _requirements(path: Path, seen: set[Path]) -> tuple[set[str], bool]:
    """Names listed in a requirements file, following ``-r``; and whether it needs the source."""
    seen.add(path.resolve())
    names: set[str] = set()
    needs_source = False
    text = re.sub(r"\\\n", " ", read_text(path))
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


def _pyproject_names(data: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for requirement in table(data, "project").get("dependencies", []) or []:
        name = requirement_name(str(requirement))
        if name is not None:
            names.add(name)
    poetry = table(data, "tool", "poetry", "dependencies")
    names |= {normalize_name(key) for key in poetry if key.lower() != "python"}
    return names


def _pipfile_names(data: dict[str, Any]) -> set[str]:
    return {normalize_name(key) for key in table(data, "packages")}


def python_pins(context: Path) -> tuple[Pin, ...]:
    """What pins the Python version, most specific first: ``.python-version``,
    ``runtime.txt``, Pipfile's ``python_version``, ``requires-python``, Poetry's ``python``."""
    pins: list[Pin] = []
    version_file = context / ".python-version"
    if version_file.is_file() and first_line(version_file):
        pins.append(Pin("python", first_line(version_file), ".python-version", True))
    runtime = context / "runtime.txt"
    if runtime.is_file() and first_line(runtime):
        pins.append(Pin("python", first_line(runtime), "runtime.txt", True))
    pipfile = context / "Pipfile"
    if pipfile.is_file():
        wanted = table(read_toml(pipfile), "requires").get("python_version")
        if isinstance(wanted, str) and wanted:
            pins.append(Pin("python", wanted, "Pipfile [requires] python_version", True))
    pyproject = context / "pyproject.toml"
    if pyproject.is_file():
        data = read_toml(pyproject)
        wanted = table(data, "project").get("requires-python")
        if isinstance(wanted, str) and wanted:
            pins.append(Pin("python", wanted, "pyproject.toml requires-python", False))
        poetry = table(data, "tool", "poetry", "dependencies").get("python")
        if isinstance(poetry, str) and poetry and poetry != "*":
            pins.append(Pin("python", poetry, "pyproject.toml tool.poetry python", False))
    return tuple(pins)


def python_project(context: Path) -> PythonProject | None:
    """The project's dependency file (a lock file's project file first), or None."""
    pins = python_pins(context)
    for lock_file, tool, project_file in LOCK_FILES:
        if (context / lock_file).is_file() and (context / project_file).is_file():
            data = read_toml(context / project_file)
            names = _pipfile_names(data) if tool == "pipenv" else _pyproject_names(data)
            return PythonProject(project_file, frozenset(names), False, tool, lock_file, pins)
    requirements = context / "requirements.txt"
    if requirements.is_file():
        names, needs_source = _requirements(requirements, set())
        return PythonProject("requirements.txt", frozenset(names), needs_source, pins=pins)
    pyproject = context / "pyproject.toml"
    if pyproject.is_file():
        names = _pyproject_names(read_toml(pyproject))
        return PythonProject("pyproject.toml", frozenset(names), True, pins=pins)
    return None


# --- entry points -----------------------------------------------------------------------


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
    """The first module that assigns ``constructor(...)`` (``FastAPI`` or ``Flask``) to a
    name; else the first that defines a factory (``def create_app(...)``) calling it."""
    assigned = re.compile(rf"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)?{constructor}\(", re.MULTILINE)
    factory = re.compile(r"^def\s+(create_app|make_app|app_factory|create_application)\s*\(",
                         re.MULTILINE)  # fmt: skip
    found: EntryPoint | None = None
    for path in _candidates(context):
        text = read_text(path)
        module, app_dir = _module_of(context, path)
        source = path.relative_to(context).as_posix()
        match = assigned.search(text)
        if match:
            return EntryPoint(module, match.group(1), source, app_dir)
        made = factory.search(text)
        if found is None and made and re.search(rf"\b{constructor}\(", text):
            found = EntryPoint(module, made.group(1), source, app_dir, factory=True)
    return found


def find_django_wsgi(context: Path) -> EntryPoint | None:
    """The WSGI module next to the settings that manage.py names (``project.wsgi``)."""
    manage = context / "manage.py"
    if not manage.is_file():
        return None
    match = _SETTINGS_MODULE.search(read_text(manage))
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


def django_settings(context: Path, entry: EntryPoint) -> DjangoSettings | None:
    """Read the settings module next to the WSGI module (``settings.py`` or ``settings/``)."""
    package = context.joinpath(*entry.module.split(".")[:-1])
    files = [package / "settings.py"] if (package / "settings.py").is_file() else []
    files += sorted((package / "settings").glob("*.py")) if (package / "settings").is_dir() else []
    if not files:
        return None
    text = "\n".join(read_text(path) for path in files)
    secret = re.search(r"SECRET_KEY\s*=\s*os\.environ\[\s*[\"'](\w+)[\"']\s*\]", text)
    hosts: list[str] = []
    for line in re.findall(r"^ALLOWED_HOSTS\b.*$", text, re.MULTILINE):
        hosts += [name for name in re.findall(_ENV_READ, line) if name not in hosts]
    return DjangoSettings(
        source=files[0].relative_to(context).as_posix(),
        static_root=re.search(r"^STATIC_ROOT\s*=", text, re.MULTILINE) is not None,
        secret_variable=secret.group(1) if secret else None,
        allowed_hosts_variables=tuple(hosts),
    )


# --- the detection ----------------------------------------------------------------------


PLATFORM_HOSTS = ("ALLOWED_HOSTS", "DJANGO_ALLOWED_HOSTS")
"""Variables the platform sets in every task to the stage's host names (comma-separated)."""


def platform_hosts(host: str | None) -> dict[str, str]:
    """The task variables that starters read for allowed host names: loopback, where the
    router reaches a task, and the stage's host name when it has one."""
    names = ",".join(["127.0.0.1", "localhost", *([host] if host else [])])
    return dict.fromkeys(PLATFORM_HOSTS, names)


def python_detection(
    context: Path, kind: Kind, project: PythonProject, images: BaseImages
) -> Detection:
    evidence = [f"{project.dependency_file} lists {kind}"]
    warnings: list[str] = []
    entry = _entry(context, kind, project)
    steps_after: list[str] = []
    if kind == "django":
        evidence.append(f"manage.py and {entry.source} define the WSGI module {entry.module}")
        settings = django_settings(context, entry)
        if settings is not None:
            steps_after, said, warned = _django_steps(settings)
            evidence += said
            warnings += warned
    elif entry.factory:
        evidence.append(f"{entry.source} defines the app factory {entry.variable}()")
    else:
        evidence.append(f"{entry.source} defines {entry.variable} = {_class(kind)}(...)")
    server = "uvicorn" if kind == "fastapi" else "gunicorn"
    extra: tuple[str, ...] = ()
    if server not in project.names:
        extra = (server,)
        evidence.append(f"{project.dependency_file} does not list {server}: it is added")
    command = server_command(kind, entry)
    choice = choose("python", list(project.pins))
    stages, said = python_stages(context, project, images.language(choice), extra, steps_after)
    return Detection(
        kind=kind,
        evidence=tuple(evidence + said),
        command=command,
        dockerfile=dockerfile(kind, stages, shell_cmd(f"exec {command}")),
        files=project_files(context, project, entry),
        versions=(choice,),
        warnings=tuple(warnings),
    )


def project_files(
    context: Path, project: PythonProject, entry: EntryPoint | None
) -> tuple[str, ...]:
    files = [project.dependency_file]
    if project.lock_file:
        files.append(project.lock_file)
    files += [p.source.split()[0] for p in project.pins if p.source.split()[0] not in files]
    if entry is not None:
        files += [name for name in ("manage.py",) if (context / name).is_file()]
        files.append(entry.source)
    return tuple(dict.fromkeys(files))


def _entry(context: Path, kind: Kind, project: PythonProject) -> EntryPoint:
    if kind == "django":
        entry = find_django_wsgi(context)
        looked = "manage.py naming a settings package with wsgi.py, or */wsgi.py next to settings"
    else:
        constructor = _class(kind)
        entry = find_entry_point(context, constructor)
        looked = (
            f"a module assigning {constructor}(...) to a name, or defining create_app() that "
            f"calls it, in " + ", ".join(_ENTRY_CANDIDATES)
        )
    if entry is None:
        raise UsageError(
            f"{context}: {project.dependency_file} lists {kind}, but no entry point was found "
            f"(looked for {looked})",
            hint="add a Procfile with a 'web:' line that starts the app, or a Dockerfile",
        )
    return entry


def _django_steps(settings: DjangoSettings) -> tuple[list[str], list[str], list[str]]:
    """collectstatic when STATIC_ROOT is set; what the settings read from the environment."""
    steps: list[str] = []
    evidence: list[str] = []
    warnings: list[str] = []
    if settings.static_root:
        prefix = ""
        if settings.secret_variable:
            prefix = f"{settings.secret_variable}=collectstatic-only "
            evidence.append(
                f"{settings.source} reads SECRET_KEY from {settings.secret_variable} with no "
                "default: collectstatic runs with a throwaway value (the task gets yours)"
            )
        steps.append(f"RUN {prefix}python manage.py collectstatic --noinput")
        evidence.append(f"{settings.source} sets STATIC_ROOT: collectstatic runs at build time")
    else:
        evidence.append(
            f"{settings.source} has no STATIC_ROOT: collectstatic does not run (static files "
            "are served only if the app serves them)"
        )
    for name in settings.allowed_hosts_variables:
        if name in PLATFORM_HOSTS:
            evidence.append(
                f"{settings.source} reads ALLOWED_HOSTS from {name}: the platform sets it to "
                "the stage's host names"
            )
        else:
            warnings.append(
                f"{settings.source} reads ALLOWED_HOSTS from {name}, which Stackyard does not "
                f"set: set it as a runtime variable (stackyard env set STACK {name}=...), or "
                f"read one of {', '.join(PLATFORM_HOSTS)}"
            )
    return steps, evidence, warnings


def _class(kind: Kind) -> str:
    return {"fastapi": "FastAPI", "flask": "Flask"}.get(kind, kind)


def server_command(kind: Kind, entry: EntryPoint) -> str:
    if kind == "fastapi":
        app_dir = f" --app-dir {entry.app_dir}" if entry.app_dir else ""
        factory = " --factory" if entry.factory else ""
        return f"uvicorn{app_dir}{factory} {entry.target} --host {BIND_HOST} --port ${{PORT}}"
    path = f" --pythonpath {entry.app_dir}" if entry.app_dir else ""
    if kind == "django":
        target = entry.module
    elif entry.factory:
        target = f"'{entry.target}()'"
    else:
        target = entry.target
    return f"gunicorn{path} --bind {BIND} {target}"


# --- the Dockerfile ---------------------------------------------------------------------


def native_packages(names: frozenset[str]) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """Which listed packages compile, and the Debian packages to build and to run them."""
    found = sorted(name for name in NATIVE if name in names)
    build: list[str] = []
    runtime: list[str] = []
    for name in found:
        build += [p for p in NATIVE[name].build if p not in build]
        runtime += [p for p in NATIVE[name].runtime if p not in runtime]
    return found, tuple(build), tuple(runtime)


def lock_tool_version(context: Path, project: PythonProject, tool: LockTool) -> tuple[str, str]:
    """The tool version to install, and why: Poetry's lock names the Poetry that wrote it."""
    if tool == "poetry" and project.lock_file:
        header = read_text(context / project.lock_file)[:300]
        match = re.search(r"generated by Poetry (\d+\.\d+\.\d+)", header)
        if match:
            return match.group(1), f"{project.lock_file} was written by Poetry {match.group(1)}"
    return TOOLS[tool], f"the {tool} version Stackyard pins"


def install_steps(project: PythonProject, extra: tuple[str, ...], tool_version: str) -> list[str]:
    """Instructions of the build stage that fill /venv with the project's dependencies."""
    packages = " ".join(extra)
    more = [f"RUN pip install --no-cache-dir {packages}"] if packages else []
    if project.lock == "poetry":
        return [
            f"RUN python3 -m venv /opt/poetry && /opt/poetry/bin/pip install --no-cache-dir "
            f"poetry=={tool_version}",
            f"COPY pyproject.toml {project.lock_file} ./",
            "RUN VIRTUAL_ENV=/venv /opt/poetry/bin/poetry install --only main --no-root "
            "--no-interaction --no-ansi",
            *more,
        ]
    if project.lock == "uv":
        return [
            f"RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "
            f"uv=={tool_version}",
            f"COPY pyproject.toml {project.lock_file} ./",
            # UV_NATIVE_TLS: trust the image's CA store, as pip does (a TLS proxy's CA too).
            "RUN UV_PROJECT_ENVIRONMENT=/venv UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=1 "
            "/opt/uv/bin/uv sync --locked --no-dev --no-install-project",
            *more,
        ]
    if project.lock == "pipenv":
        return [
            f"RUN python3 -m venv /opt/pipenv && /opt/pipenv/bin/pip install --no-cache-dir "
            f"pipenv=={tool_version}",
            f"COPY Pipfile {project.lock_file} ./",
            "RUN /opt/pipenv/bin/pipenv requirements > /tmp/requirements.lock "
            "&& pip install --no-cache-dir -r /tmp/requirements.lock",
            *more,
        ]
    if project.dependency_file == "pyproject.toml":
        return ["COPY . .", f"RUN pip install --no-cache-dir . {packages}".rstrip()]
    install = f"RUN pip install --no-cache-dir -r requirements.txt {packages}".rstrip()
    if project.copy_all_first:
        return ["COPY . .", install]
    return ["COPY requirements.txt ./", install]


def python_stages(
    context: Path,
    project: PythonProject,
    base: str,
    extra: tuple[str, ...],
    after_copy: list[str],
) -> tuple[list[Stage], list[str]]:
    """A build stage that fills /venv (with a compiler when a native package needs one),
    and a final stage with /venv, the run-time libraries and the source."""
    evidence: list[str] = []
    found, build_packages, runtime_packages = native_packages(project.names)
    build: list[str] = ["WORKDIR /app"]
    if found:
        build.append(apt_install(build_packages, then=_HEADERS))
        evidence.append(
            f"{project.dependency_file} lists {', '.join(found)}, which compile: the build "
            f"stage gets {' '.join(build_packages)}, the final image "
            f"{' '.join(runtime_packages) or 'nothing more'}"
        )
    build += [
        "RUN python3 -m venv /venv",
        "ENV PATH=/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1",
    ]
    tool_version = ""
    if project.lock is not None:
        tool_version, why = lock_tool_version(context, project, project.lock)
        evidence.append(
            f"{project.lock_file} is there: {project.lock} {tool_version} installs exactly what "
            f"it locks ({why})"
        )
    build += install_steps(project, extra, tool_version)
    final: list[str] = []
    if runtime_packages:
        final.append(apt_install(runtime_packages))
    final += [
        "WORKDIR /app",
        "ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
        "COPY --from=build /venv /venv",
        "COPY . .",
        *after_copy,
    ]
    return [Stage(base, tuple(build), "build"), Stage(base, tuple(final))], evidence
