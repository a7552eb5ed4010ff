"""JavaScript apps for auto-dockerize: the package manager and its lock file, the Node
version, Next.js, single-page apps built to static files, and Node servers.

Pure decisions over the context's files; ``stackyard.images.dockerize.detect`` calls them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackyard.errors import UsageError
from stackyard.images.dockerize.files import first_line, read_json, read_text
from stackyard.images.dockerize.model import BaseImages, Detection
from stackyard.images.dockerize.render import (
    BIND_HOST,
    Stage,
    dockerfile,
    exec_cmd,
    shell_cmd,
)
from stackyard.images.dockerize.versions import Choice, Pin, choose

MANAGER_VERSIONS = {"pnpm": "10.33.0", "yarn-berry": "4.12.0", "bun": "1.3.5"}
"""Versions installed when neither ``packageManager`` nor the lock file names one (pinned)."""

_PNPM_BY_LOCK = {"9": "10.33.0", "6": "8.15.9", "5": "7.33.7"}
"""pnpm for a ``pnpm-lock.yaml`` lockfileVersion (major), when packageManager says nothing."""

SPA_BUILDERS: tuple[tuple[str, str, str], ...] = (
    # (dependency, what it is, where its build writes by default)
    ("react-scripts", "Create React App", "build"),
    ("vite", "Vite", "dist"),
    ("@vue/cli-service", "Vue CLI", "dist"),
    ("parcel", "Parcel", "dist"),
    ("webpack", "webpack", "dist"),
)
"""Front-end build tools whose output is static files, served with an SPA fallback."""

DEV_SERVERS = (
    r"^vite(\s+(dev|serve)\b.*)?$",
    r"^react-scripts\s+start\b",
    r"^webpack(-dev-server|\s+serve)\b",
    r"^vue-cli-service\s+serve\b",
    r"^parcel(\s+serve)?\s+(?!build)",
    r"^ng\s+serve\b",
    r"^next\s+dev\b",
)
"""Start scripts that run a development server: never what a production image runs."""

CADDYFILE = (
    "{\\n\\tadmin off\\n\\tauto_https off\\n}\\n"
    ":{$PORT:8080} {\\n\\tbind {$HOST:0.0.0.0}\\n\\troot * /srv\\n"
    "\\ttry_files {path} /index.html\\n\\tfile_server\\n}\\n"
)
"""Caddy serving /srv with the SPA fallback: a path that is no file gets index.html."""


@dataclass(frozen=True)
class Manager:
    """How to install a project's packages from its lock file, build, and prune."""

    name: str  # npm | yarn | yarn-berry | pnpm | bun
    lock_file: str | None
    setup: tuple[str, ...]  # RUN lines that make the tool available
    install: str
    prune: str
    run: str  # "npm run", "yarn", "pnpm run", "bun run"
    reason: str


@dataclass(frozen=True)
class NodeProject:
    package: dict[str, Any]
    manager: Manager
    pins: tuple[Pin, ...]

    @property
    def scripts(self) -> dict[str, str]:
        found = self.package.get("scripts")
        if not isinstance(found, dict):
            return {}
        return {k: v for k, v in found.items() if isinstance(v, str) and v.strip()}

    def depends_on(self, name: str) -> bool:
        return any(
            isinstance(self.package.get(group), dict) and name in self.package[group]
            for group in ("dependencies", "devDependencies")
        )


def node_project(context: Path) -> NodeProject | None:
    path = context / "package.json"
    if not path.is_file():
        return None
    package = read_json(path)
    return NodeProject(package, package_manager(context, package), node_pins(context, package))


def node_pins(context: Path, package: dict[str, Any]) -> tuple[Pin, ...]:
    """``.nvmrc`` and ``.node-version`` (exact lines), then ``engines.node`` (a range)."""
    pins: list[Pin] = []
    for name in (".nvmrc", ".node-version"):
        path = context / name
        text = first_line(path) if path.is_file() else ""
        if text and text not in ("node", "lts/*", "latest", "current", "stable"):
            exact = not text.startswith(("lts/", ">", "<", "^", "~"))
            pins.append(Pin("node", text, name, exact))
    engines = package.get("engines")
    wanted = engines.get("node") if isinstance(engines, dict) else None
    if isinstance(wanted, str) and wanted.strip():
        pins.append(Pin("node", wanted.strip(), "package.json engines.node", False))
    return tuple(p for p in pins if not p.text.startswith("lts/"))


def package_manager(context: Path, package: dict[str, Any]) -> Manager:
    """The manager that owns the lock file (``packageManager`` names its version)."""
    declared = package.get("packageManager")
    declared_name, _, declared_version = (declared or "").partition("@")
    declared_version = declared_version.split("+")[0]
    if (context / "bun.lock").is_file() or (context / "bun.lockb").is_file():
        lock = "bun.lock" if (context / "bun.lock").is_file() else "bun.lockb"
        version = declared_version if declared_name == "bun" else MANAGER_VERSIONS["bun"]
        return Manager(
            "bun", lock, (f"RUN npm install -g bun@{version}",),
            "bun install --frozen-lockfile", "rm -rf node_modules && bun install "
            "--frozen-lockfile --production", "bun run", f"{lock} is there: bun {version}",
        )  # fmt: skip
    if (context / "pnpm-lock.yaml").is_file():
        version, why = _pnpm_version(context, declared_name, declared_version)
        return Manager(
            "pnpm", "pnpm-lock.yaml", _corepack("pnpm", version),
            "pnpm install --frozen-lockfile", "pnpm prune --prod", "pnpm run",
            f"pnpm-lock.yaml is there: pnpm {version} ({why})",
        )  # fmt: skip
    if (context / "yarn.lock").is_file():
        return _yarn(context, declared_name, declared_version)
    for lock in ("package-lock.json", "npm-shrinkwrap.json"):
        if (context / lock).is_file():
            return Manager(
                "npm", lock, (), "npm ci", "npm prune --omit=dev", "npm run",
                f"{lock} is there: npm ci installs exactly what it locks",
            )  # fmt: skip
    reason = (
        "no lock file (package-lock.json, yarn.lock, pnpm-lock.yaml, bun.lock): npm install "
        "resolves versions at build time, so builds are not reproducible; commit a lock file"
    )
    above = _lock_above(context)
    if above is not None:
        reason = (
            f"no lock file in the build context; {above} is outside it (a workspace root?), "
            "so npm install resolves versions at build time: builds are not reproducible"
        )
    return Manager("npm", None, (), "npm install", "npm prune --omit=dev", "npm run", reason)


def _lock_above(context: Path) -> str | None:
    """A lock file in a folder above the context, up to three levels (a monorepo root)."""
    names = ("package-lock.json", "yarn.lock", "pnpm-lock.yaml", "bun.lock", "bun.lockb")
    folder = context.resolve()
    for depth in range(1, 4):
        folder = folder.parent
        for name in names:
            if (folder / name).is_file():
                return "../" * depth + name
    return None


def _corepack(tool: str, version: str) -> tuple[str, ...]:
    return (
        "ENV COREPACK_ENABLE_DOWNLOAD_PROMPT=0",
        f"RUN corepack enable && corepack prepare {tool}@{version} --activate",
    )


def _pnpm_version(context: Path, name: str, version: str) -> tuple[str, str]:
    if name == "pnpm" and version:
        return version, "package.json packageManager"
    head = read_text(context / "pnpm-lock.yaml")[:200]
    match = re.search(r"lockfileVersion:\s*'?(\d+)", head)
    if match and match.group(1) in _PNPM_BY_LOCK:
        return _PNPM_BY_LOCK[match.group(1)], f"lockfileVersion {match.group(1)}"
    return MANAGER_VERSIONS["pnpm"], "the pnpm version Stackyard pins"


def _yarn(context: Path, name: str, version: str) -> Manager:
    berry = "__metadata:" in read_text(context / "yarn.lock")[:2000] or (
        name == "yarn" and not version.startswith("1.")
    )
    if not berry:
        return Manager(
            "yarn", "yarn.lock", (), "yarn install --frozen-lockfile",
            "yarn install --frozen-lockfile --production --ignore-scripts", "yarn",
            "yarn.lock is there (classic, v1): yarn install --frozen-lockfile",
        )  # fmt: skip
    chosen = version if name == "yarn" and version else MANAGER_VERSIONS["yarn-berry"]
    return Manager(
        "yarn-berry", "yarn.lock", _corepack("yarn", chosen),
        "yarn install --immutable", "yarn workspaces focus --all --production", "yarn",
        f"yarn.lock is there (berry): yarn {chosen} through corepack",
    )  # fmt: skip


# --- what kind of JavaScript app --------------------------------------------------------


def is_dev_server(script: str) -> bool:
    text = script.strip()
    return any(re.search(pattern, text) for pattern in DEV_SERVERS)


def spa_builder(project: NodeProject) -> tuple[str, str, str] | None:
    build = project.scripts.get("build", "")
    for dependency, name, output in SPA_BUILDERS:
        tool = dependency.rsplit("/", 1)[-1]
        if project.depends_on(dependency) and (tool in build or dependency in build):
            return dependency, name, output
    return None


def spa_output(context: Path, default: str) -> tuple[str, str | None]:
    """The build's output folder: ``build.outDir`` of a Vite config, or webpack's
    ``output.path``, when set to a plain string; else the tool's default."""
    for pattern, regex in (
        ("vite.config.*", r"outDir\s*:\s*['\"]([\w./-]+)['\"]"),
        ("webpack.config*.js", r"path\.resolve\(\s*__dirname\s*,\s*['\"]([\w./-]+)['\"]\s*\)"),
    ):
        for path in sorted(context.glob(pattern)):
            match = re.search(regex, read_text(path))
            if match:
                return match.group(1).strip("./") or default, path.name
    return default, None


def start_fallback(context: Path, project: NodeProject) -> tuple[str, str] | None:
    """What ``npm start`` would run without scripts.start: ``main``, server.js, index.js."""
    main = project.package.get("main")
    if isinstance(main, str) and main.strip() and (context / main).is_file():
        return main.strip(), f"package.json has no scripts.start; its main is {main.strip()}"
    for name in ("server.js", "index.js", "app.js"):
        if (context / name).is_file():
            return name, f"package.json has no scripts.start; {name} is at the root"
    return None


def node_detection(context: Path, project: NodeProject, images: BaseImages) -> Detection:
    choice = choose("node", list(project.pins))
    base = images.language(choice)
    scripts = project.scripts
    files = ["package.json"]
    files += [project.manager.lock_file] if project.manager.lock_file else []
    files += [p.source.split()[0] for p in project.pins if p.source.split()[0] not in files]
    if project.depends_on("next") and "next" in scripts.get("build", "next build"):
        return _nextjs(context, project, base, choice, tuple(files))
    start = scripts.get("start")
    builder = spa_builder(project)
    if builder is not None and (start is None or is_dev_server(start)):
        return _spa(context, project, base, choice, tuple(files), builder, images)
    if start is not None and not is_dev_server(start):
        return _server(context, project, base, choice, tuple(files), start, None)
    fallback = start_fallback(context, project)
    if fallback is not None:
        files.append(fallback[0])
        return _server(context, project, base, choice, tuple(files), None, fallback)
    raise _not_detected(project, start)


def _not_detected(project: NodeProject, start: str | None) -> UsageError:
    if start is not None:
        reason = f"scripts.start runs a development server ({start}), and no build tool "
        reason += "that writes static files was found"
    else:
        reason = "it has no scripts.start, no main file, server.js, index.js or app.js"
    return UsageError(
        f"package.json was found, but it is not a Node app Stackyard can start: {reason}. "
        f"Looked for: Next.js (next), a single-page app built by "
        f"{', '.join(name for _, name, _ in SPA_BUILDERS)} (a build script), scripts.start, "
        "main, server.js, index.js",
        hint="add scripts.start with your production server, a Procfile web: line, or a Dockerfile",
    )


def _build_stage(project: NodeProject, base: str, *, build: bool, prune: bool) -> Stage:
    manager = project.manager
    lock = [manager.lock_file] if manager.lock_file else []
    extra_files = [".yarnrc.yml"] if manager.name == "yarn-berry" else []
    steps = ["WORKDIR /app", *manager.setup]
    steps.append(f"COPY {' '.join(['package.json', *lock, *extra_files])} ./")
    steps.append(f"RUN {manager.install}")
    steps += ["COPY . .", "ENV NODE_ENV=production"]
    if build:
        steps.append(f"RUN {manager.run} build")
    if prune:
        steps.append(f"RUN {manager.prune}")
    return Stage(base, tuple(steps), "build")


def _nextjs(
    context: Path, project: NodeProject, base: str, choice: Choice, files: tuple[str, ...]
) -> Detection:
    evidence = [
        "package.json depends on next: Next.js, built with next build",
        project.manager.reason,
    ]
    config = next(iter(sorted(context.glob("next.config.*"))), None)
    standalone = config is not None and re.search(
        r"output\s*:\s*['\"]standalone['\"]", read_text(config)
    )
    if standalone and config is not None:
        evidence.append(f"{config.name} sets output: 'standalone': the image runs server.js")
        command = f'HOSTNAME="{BIND_HOST}" exec node server.js'
        copies = [
            "COPY --from=build /app/.next/standalone ./",
            "COPY --from=build /app/.next/static ./.next/static",
        ]
        if (context / "public").is_dir():
            copies.append("COPY --from=build /app/public ./public")
        build = _build_stage(project, base, build=True, prune=False)
        files += (config.name,)
    else:
        command = f"exec node_modules/.bin/next start --hostname {BIND_HOST} --port ${{PORT}}"
        evidence.append("next start serves the build; devDependencies are pruned after it")
        copies = ["COPY --from=build /app ./"]
        build = _build_stage(project, base, build=True, prune=True)
    final = Stage(base, ("WORKDIR /app", "ENV NODE_ENV=production", *copies))
    stages = [build, final]
    return Detection(
        kind="nextjs",
        evidence=tuple(evidence),
        command=command,
        dockerfile=dockerfile("nextjs", stages, shell_cmd(command)),
        files=files,
        versions=(choice,),
        warnings=google_fonts_warnings(context),
    )


def google_fonts_warnings(context: Path) -> tuple[str, ...]:
    """``next/font/google`` downloads its fonts during ``next build``."""
    for pattern in ("app/layout.*", "src/app/layout.*", "pages/_app.*", "src/pages/_app.*"):
        for path in sorted(context.glob(pattern)):
            if "next/font/google" in read_text(path):
                name = path.relative_to(context).as_posix()
                return (
                    f"{name} loads next/font/google: next build downloads the fonts from "
                    "Google Fonts, so a build that cannot reach it fails. Self-host them "
                    "(next/font/local, or the geist package for Geist)",
                )
    return ()


def _spa(
    context: Path,
    project: NodeProject,
    base: str,
    choice: Choice,
    files: tuple[str, ...],
    builder: tuple[str, str, str],
    images: BaseImages,
) -> Detection:
    dependency, name, default = builder
    output, config = spa_output(context, default)
    start = project.scripts.get("start")
    evidence = [
        f"package.json depends on {dependency} and scripts.build runs it: a {name} app, "
        f"built to static files in {output}/" + (f" (set in {config})" if config else ""),
    ]
    if start is not None:
        evidence.append(f"scripts.start ({start}) is a development server: it is not used")
    evidence += [
        project.manager.reason,
        f"the built files are served by Caddy ({images.spa}); a path that is no file gets "
        "index.html (single-page app fallback)",
    ]
    final = Stage(images.spa, (
        f"COPY --from=build /app/{output} /srv",
        f"RUN printf '{CADDYFILE}' > /etc/caddy/Caddyfile",
    ))  # fmt: skip
    argv = ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    stages = [_build_stage(project, base, build=True, prune=False), final]
    return Detection(
        kind="spa",
        evidence=tuple(evidence),
        command=shlex.join(argv),
        dockerfile=dockerfile("spa", stages, exec_cmd(argv)),
        files=files + ((config,) if config else ()),
        versions=(choice,),
    )


def _server(
    context: Path,
    project: NodeProject,
    base: str,
    choice: Choice,
    files: tuple[str, ...],
    start: str | None,
    fallback: tuple[str, str] | None,
) -> Detection:
    build = "build" in project.scripts
    entry: str | None
    if fallback is not None:
        entry, said = fallback
        command = f"exec node {entry}"
        evidence = [said]
    else:
        entry = _script_entry(start or "")
        command = "exec npm start"
        evidence = [f"package.json has scripts.start: {start}"]
    evidence.append(project.manager.reason)
    if build:
        evidence.append("scripts.build runs at build time, with devDependencies; they are "
                        "pruned afterwards")  # fmt: skip
        stages = [
            _build_stage(project, base, build=True, prune=True),
            Stage(base, ("WORKDIR /app", "ENV NODE_ENV=production", "COPY --from=build /app ./")),
        ]
    else:
        stages = [production_stage(project, base)]
    return Detection(
        kind="node",
        evidence=tuple(evidence),
        command=command,
        dockerfile=dockerfile("node", stages, shell_cmd(command)),
        files=files,
        versions=(choice,),
        warnings=binding_warnings(context, entry),
    )


def production_stage(project: NodeProject, base: str) -> Stage:
    """No build script: one stage that installs only the production dependencies."""
    manager = project.manager
    install = {
        "npm": "npm ci --omit=dev" if manager.lock_file else "npm install --omit=dev",
        "yarn": "yarn install --frozen-lockfile --production",
        "yarn-berry": "yarn workspaces focus --all --production",
        "pnpm": "pnpm install --frozen-lockfile --prod",
        "bun": "bun install --frozen-lockfile --production",
    }[manager.name]
    lock = [manager.lock_file] if manager.lock_file else []
    extra = [".yarnrc.yml"] if manager.name == "yarn-berry" else []
    return Stage(base, (
        "WORKDIR /app", "ENV NODE_ENV=production", *manager.setup,
        f"COPY {' '.join(['package.json', *lock, *extra])} ./", f"RUN {install}", "COPY . .",
    ))  # fmt: skip


def _script_entry(script: str) -> str | None:
    """``node ./bin/www`` -> ``bin/www``: the file a start script runs, if it names one."""
    try:
        words = shlex.split(script)
    except ValueError:
        return None
    if len(words) >= 2 and words[0] in ("node", "nodemon", "tsx", "ts-node", "bun"):
        return next((w for w in words[1:] if not w.startswith("-")), None)
    return None


_LISTEN = re.compile(r"\.listen\(\s*([^)]*)\)", re.DOTALL)


def binding_warnings(context: Path, entry: str | None) -> tuple[str, ...]:
    """A warning when the server's entry file listens without a host (Node then binds
    every interface) or on 0.0.0.0 / ::, and never reads HOST."""
    if entry is None:
        return ()
    path = context / entry
    if not path.is_file():
        return ()
    text = read_text(path)
    if "process.env.HOST" in text or "env.HOST" in text:
        return ()
    for match in _LISTEN.finditer(text):
        arguments = [a.strip() for a in match.group(1).split(",") if a.strip()]
        host = arguments[1] if len(arguments) > 1 else ""
        every = not host or host.startswith(("function", "(", "()")) or "=>" in host
        if every or host.strip("'\"`") in ("0.0.0.0", "::", "[::]"):
            line = text[: match.start()].count("\n") + 1
            return (
                f"{entry}:{line} calls .listen({match.group(1).strip()}) with no host, or "
                "every interface: with host networking the app listens on every interface "
                "of the machine, next to the router. Listen on process.env.HOST "
                "(the platform sets it), e.g. server.listen(port, process.env.HOST)",
            )
    return ()
