"""Auto-dockerize: detect what app a build context holds and generate its Dockerfile.

Pure decisions only (no process, no network): the builder and ``stackyard dockerize`` call
``detect``. The Python and JavaScript rules live in python.py and node.py, the version table
in versions.py, the Dockerfile text in render.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from stackyard.errors import UsageError
from stackyard.images.dockerize.files import read_text
from stackyard.images.dockerize.model import BaseImages, Detection, Kind
from stackyard.images.dockerize.node import node_detection, node_project, production_stage
from stackyard.images.dockerize.python import (
    FRAMEWORKS,
    EntryPoint,
    PythonProject,
    find_django_wsgi,
    find_entry_point,
    normalize_name,
    project_files,
    python_detection,
    python_project,
    python_stages,
    requirement_name,
)
from stackyard.images.dockerize.render import BIND, Stage, dockerfile, shell_cmd
from stackyard.images.dockerize.versions import SUPPORTED, Choice, choose

__all__ = [
    "BIND",
    "FRAMEWORKS",
    "LOOKED_FOR",
    "SUPPORTED",
    "BaseImages",
    "Detection",
    "EntryPoint",
    "Kind",
    "detect",
    "find_django_wsgi",
    "find_entry_point",
    "normalize_name",
    "requirement_name",
]

LOOKED_FOR = (
    "a Dockerfile",
    "a Procfile with a web: line",
    "requirements.txt, pyproject.toml, or Pipfile with Pipfile.lock, listing fastapi, flask "
    "or django",
    "package.json (Next.js, a single-page app with a build script, scripts.start, main, "
    "server.js or index.js)",
    "index.html",
)

_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.*?)\s*$")
_EVERY_INTERFACE = re.compile(r"(?<![\w.])(0\.0\.0\.0|\[::\]|::)(?![\w.])")


def detect(context: Path, *, base_images: BaseImages | None = None) -> Detection:
    """Decide what ``context`` is and return the Dockerfile to build it.

    Precedence: a Procfile ``web:`` command > a Python framework > a JavaScript app > a
    static site. Raises UsageError when nothing matches, naming what was looked for.
    """
    images = base_images or BaseImages()
    python = python_project(context)
    procfile = _procfile_web(context)
    if procfile is not None:
        return _procfile_detection(context, procfile, python, images)
    if python is not None:
        for kind in FRAMEWORKS:
            if kind in python.names:
                return python_detection(context, kind, python, images)
    node = node_project(context)
    if node is not None:
        return node_detection(context, node, images)
    if (context / "index.html").is_file():
        return _static_detection(images)
    raise _nothing_detected(context, python)


def _procfile_web(context: Path) -> str | None:
    path = context / "Procfile"
    if not path.is_file():
        return None
    for line in read_text(path).splitlines():
        match = _PROCFILE_LINE.match(line.strip())
        if match and match.group(1) == "web" and match.group(2):
            return match.group(2)
    return None


def every_interface_warning(source: str, command: str) -> tuple[str, ...]:
    """A warning when a start command names 0.0.0.0 or :: (every interface)."""
    found = _EVERY_INTERFACE.search(command)
    if found is None:
        return ()
    return (
        f"{source} binds {found.group(1)}, every interface: with host networking the app "
        "listens on every interface of the machine, next to the router. Bind ${HOST} "
        "(the platform sets it), e.g. --bind ${HOST}:${PORT}",
    )


def _procfile_detection(
    context: Path, command: str, python: PythonProject | None, images: BaseImages
) -> Detection:
    evidence = [f"Procfile has web: {command}"]
    cmd = shell_cmd(command)
    warnings = every_interface_warning("the Procfile web: command", command)
    files: tuple[str, ...] = ("Procfile",)
    choices: tuple[Choice, ...] = ()
    node = node_project(context) if python is None else None
    if python is not None:
        evidence.append(f"{python.dependency_file} is present: Python install steps")
        choice = choose("python", list(python.pins))
        stages, said = python_stages(context, python, images.language(choice), (), [])
        evidence += said
        files += project_files(context, python, None)
        choices = (choice,)
    elif node is not None:
        evidence += ["package.json is present: Node install steps", node.manager.reason]
        choice = choose("node", list(node.pins))
        stages = [production_stage(node, images.language(choice))]
        files += ("package.json",)
        choices = (choice,)
    else:
        evidence.append("no requirements.txt, pyproject.toml or package.json: busybox base")
        stages = [Stage(images.static, ("WORKDIR /app", "COPY . ."))]
    return Detection(
        "procfile",
        tuple(evidence),
        command,
        dockerfile("procfile", stages, cmd),
        files=files,
        versions=choices,
        warnings=warnings,
    )


def _static_detection(images: BaseImages) -> Detection:
    command = f"busybox httpd -f -p {BIND} -h /www"
    stages = [Stage(images.static, ("COPY . /www",))]
    return Detection(
        "static",
        ("index.html is at the context root, and there is no package.json",),
        command,
        dockerfile("static", stages, shell_cmd(f"exec {command}")),
        files=("index.html",),
    )


def _nothing_detected(context: Path, python: PythonProject | None) -> UsageError:
    found = ""
    if python is not None:
        found = f" ({python.dependency_file} lists none of fastapi, flask or django)"
    return UsageError(
        f"{context} has no Dockerfile and nothing to generate one from{found}. "
        f"Looked for: {'; '.join(LOOKED_FOR)}",
        hint="add a Dockerfile, or one of those files (a Procfile web: line works for any app)",
    )
