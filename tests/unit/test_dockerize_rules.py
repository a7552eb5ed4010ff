"""Auto-dockerize rules added for real apps: versions, lock files, native packages, app
factories, Django settings, JavaScript kinds and managers, binding warnings, the CLI.

Each test writes a small context into tmp_path and compares plain data; no process starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from stackyard.cli.dockerize import register
from stackyard.errors import UsageError
from stackyard.images.dockerize import BaseImages, detect
from stackyard.images.dockerize.python import platform_hosts
from stackyard.images.dockerize.versions import Pin, choose, satisfies

FLASK_APP = "from flask import Flask\n\napp = Flask(__name__)\n"
FASTAPI_APP = "from fastapi import FastAPI\n\napp = FastAPI()\n"
DJANGO_MANAGE = "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"


def context(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def package(**fields: object) -> str:
    return json.dumps(fields)


# --- versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "image", "reason"),
    [
        ({}, "python:3.11-slim", "nothing pins a Python version: the default"),
        ({".python-version": "3.13\n"}, "python:3.13-slim", ".python-version pins 3.13"),
        ({".python-version": "3.12.4\n"}, "python:3.12-slim", ".python-version pins 3.12.4"),
        ({"runtime.txt": "python-3.13.1\n"}, "python:3.13-slim", "runtime.txt pins python-3.13.1"),
        (
            {"pyproject.toml": '[project]\nrequires-python = ">=3.12"\ndependencies = ["flask"]\n'},
            "python:3.13-slim",
            "pyproject.toml requires-python allows >=3.12: 3.13 is the first supported one",
        ),
        (
            {"pyproject.toml": '[project]\nrequires-python = ">=3.10"\ndependencies = ["flask"]\n'},
            "python:3.11-slim",
            "pyproject.toml requires-python allows >=3.10: 3.11 is the default",
        ),
        (
            {
                "pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.12"\nflask = "*"\n',
            },
            "python:3.13-slim",
            "pyproject.toml tool.poetry python allows ^3.12: 3.13 is the first supported one",
        ),
    ],
)
def test_python_version_from_pins(
    tmp_path: Path, files: dict[str, str], image: str, reason: str
) -> None:
    files = {"requirements.txt": "flask\n", "app.py": FLASK_APP, **files}
    if "pyproject.toml" in files:
        del files["requirements.txt"]
    detection = detect(context(tmp_path, files))
    assert detection.dockerfile.splitlines()[1] == f"FROM {image} AS build"
    assert detection.versions[0].version.image == image
    assert detection.versions[0].reason.startswith(reason)


def test_python_version_file_wins_and_the_others_are_named(tmp_path: Path) -> None:
    ctx = context(tmp_path, {
        ".python-version": "3.13", "runtime.txt": "python-3.11.9",
        "requirements.txt": "flask\n", "app.py": FLASK_APP,
    })  # fmt: skip
    assert detect(ctx).versions[0].reason == (
        ".python-version pins 3.13; runtime.txt (python-3.11.9) is not used"
    )


def test_unsupported_python_pin_lists_the_versions(tmp_path: Path) -> None:
    ctx = context(tmp_path, {
        ".python-version": "3.8", "requirements.txt": "flask\n", "app.py": FLASK_APP,
    })  # fmt: skip
    with pytest.raises(UsageError) as caught:
        detect(ctx)
    assert caught.value.message == (
        ".python-version pins Python 3.8, and no image has it: the supported versions are "
        "3.10, 3.11, 3.12, 3.13, 3.14"
    )


def test_a_range_no_version_meets_is_an_error(tmp_path: Path) -> None:
    ctx = context(tmp_path, {
        "pyproject.toml": '[project]\nrequires-python = "<3.9"\ndependencies = ["flask"]\n',
        "app.py": FLASK_APP,
    })  # fmt: skip
    with pytest.raises(UsageError, match=r"none of the supported versions \(3\.10, 3\.11"):
        detect(ctx)


@pytest.mark.parametrize(
    ("files", "image"),
    [
        ({}, "node:22-slim"),
        ({".nvmrc": "v20.11.1\n"}, "node:20-slim"),
        ({".node-version": "24\n"}, "node:24-slim"),
        ({"engines": ">=18"}, "node:22-slim"),
        ({"engines": "^24.0.0"}, "node:24-slim"),
        ({"engines": "20.x || 22.x"}, "node:22-slim"),
        ({"engines": ">=18 <21"}, "node:20-slim"),
    ],
)
def test_node_version_from_pins(tmp_path: Path, files: dict[str, str], image: str) -> None:
    engines = files.pop("engines", None)
    fields: dict[str, object] = {"scripts": {"start": "node server.js"}}
    if engines:
        fields["engines"] = {"node": engines}
    detection = detect(context(tmp_path, {"package.json": package(**fields), **files}))
    assert detection.versions[0].version.image == image
    assert f"FROM {image}" in detection.dockerfile


def test_unsupported_node_pin(tmp_path: Path) -> None:
    ctx = context(tmp_path, {".nvmrc": "16", "package.json": package(scripts={"start": "x"})})
    with pytest.raises(
        UsageError, match=r"\.nvmrc pins Node 16.*supported versions are 20, 22, 24"
    ):
        detect(ctx)


@pytest.mark.parametrize(
    ("language", "spec", "version", "expected"),
    [
        ("python", ">=3.12,<3.14", "3.13.9", True),
        ("python", ">=3.12,<3.14", "3.14.0", False),
        ("python", "~=3.11", "3.13.9", True),
        ("python", "~=3.11.2", "3.12.0", False),
        ("python", "==3.12.*", "3.12.12", True),
        ("python", "!=3.12.*", "3.12.12", False),
        ("python", "^3.11", "3.14.0", True),
        ("python", "~3.11", "3.12.0", False),
        ("node", "^20.19.0 || >=22.12.0", "22.23.3", True),
        ("node", "^20.19.0 || >=22.12.0", "20.11.0", False),
        ("node", "18 - 20", "20.19.5", True),
        ("node", "<=20", "20.19.5", True),
        ("node", ">20", "20.19.5", False),
        ("node", "~22.1", "22.23.3", False),
        ("node", "*", "24.0.0", True),
    ],
)
def test_satisfies(language: str, spec: str, version: str, expected: bool) -> None:
    assert satisfies(language, spec, version) is expected  # type: ignore[arg-type]


def test_choose_without_pins_is_the_default() -> None:
    assert choose("node", []).version.line == "22"
    assert choose("python", [Pin("python", "3.13", "x", True)]).version.line == "3.13"


def test_base_images_override_the_table(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"requirements.txt": "flask\n", "app.py": FLASK_APP})
    text = detect(ctx, base_images=BaseImages(python="mirror.local/python@sha256:ab")).dockerfile
    assert "FROM mirror.local/python@sha256:ab AS build\n" in text


# --- Python lock files and native packages ---------------------------------------------


PYPROJECT = '[project]\nname = "a"\nversion = "1"\ndependencies = ["django", "gunicorn"]\n'
DJANGO_FILES = {"manage.py": DJANGO_MANAGE, "mysite/wsgi.py": "", "mysite/settings.py": ""}


@pytest.mark.parametrize(
    ("lock", "project", "lines", "said"),
    [
        (
            {"poetry.lock": "# This file is automatically @generated by Poetry 2.1.3 and should"},
            {"pyproject.toml": PYPROJECT},
            [
                "RUN python3 -m venv /opt/poetry && /opt/poetry/bin/pip install --no-cache-dir "
                "poetry==2.1.3",
                "COPY pyproject.toml poetry.lock ./",
                "RUN VIRTUAL_ENV=/venv /opt/poetry/bin/poetry install --only main --no-root "
                "--no-interaction --no-ansi",
            ],
            "poetry.lock is there: poetry 2.1.3 installs exactly what it locks (poetry.lock "
            "was written by Poetry 2.1.3)",
        ),
        (
            {"uv.lock": "version = 1\n"},
            {"pyproject.toml": PYPROJECT},
            [
                "RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir uv==0.13.9",
                "COPY pyproject.toml uv.lock ./",
                "RUN UV_PROJECT_ENVIRONMENT=/venv UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=1 "
                "/opt/uv/bin/uv sync --locked --no-dev --no-install-project",
            ],
            "uv.lock is there: uv 0.13.9 installs exactly what it locks (the uv version "
            "Stackyard pins)",
        ),
        (
            {"Pipfile.lock": "{}"},
            {"Pipfile": '[packages]\ndjango = "*"\ngunicorn = "*"\n'},
            [
                "RUN python3 -m venv /opt/pipenv && /opt/pipenv/bin/pip install --no-cache-dir "
                "pipenv==2026.10.3",
                "COPY Pipfile Pipfile.lock ./",
                "RUN /opt/pipenv/bin/pipenv requirements > /tmp/requirements.lock && pip "
                "install --no-cache-dir -r /tmp/requirements.lock",
            ],
            "Pipfile.lock is there: pipenv 2026.10.3 installs exactly what it locks (the "
            "pipenv version Stackyard pins)",
        ),
    ],
)
def test_lock_files_install_through_their_tool(
    tmp_path: Path, lock: dict[str, str], project: dict[str, str], lines: list[str], said: str
) -> None:
    detection = detect(context(tmp_path, {**lock, **project, **DJANGO_FILES}))
    assert detection.kind == "django"
    assert "\n".join(lines) + "\nFROM python:3.11-slim\n" in detection.dockerfile
    assert said in detection.evidence
    assert next(iter(lock)) in detection.files


def test_a_lock_file_without_its_project_file_is_not_used(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"uv.lock": "", "requirements.txt": "flask\n", "app.py": FLASK_APP})
    detection = detect(ctx)
    assert "uv" not in detection.dockerfile
    assert "RUN pip install --no-cache-dir -r requirements.txt gunicorn" in detection.dockerfile


def test_psycopg2_compiles_in_a_build_stage_and_runs_with_libpq(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"requirements.txt": "flask\ngunicorn\npsycopg2==2.9.13\n",
                             "app.py": FLASK_APP})  # fmt: skip
    detection = detect(ctx)
    build, final = detection.dockerfile.split("\nFROM python:3.11-slim\n")
    assert "apt-get install -y --no-install-recommends gcc libc6-dev libpq-dev" in build
    # The headers check is grouped: a failed install before it still fails the step.
    assert "&& { python3 -c " in build
    assert "|| apt-get install -y --no-install-recommends python3-dev; } && rm -rf" in build
    assert final.startswith(
        "RUN apt-get update && apt-get install -y --no-install-recommends libpq5 "
        "&& rm -rf /var/lib/apt/lists/*\n"
    )
    assert "gcc" not in final
    assert (
        "requirements.txt lists psycopg2, which compile: the build stage gets gcc libc6-dev "
        "libpq-dev, the final image libpq5"
    ) in detection.evidence


def test_psycopg2_binary_needs_no_compiler(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"requirements.txt": "flask\npsycopg2-binary\n", "app.py": FLASK_APP})
    assert "apt-get" not in detect(ctx).dockerfile


# --- app factories and Django settings --------------------------------------------------


def test_flask_factory(tmp_path: Path) -> None:
    ctx = context(tmp_path, {
        "pyproject.toml": '[project]\nname = "flaskr"\nversion = "1"\ndependencies = ["flask"]\n',
        "flaskr/__init__.py": "from flask import Flask\n\ndef create_app(test_config=None):\n"
        "    app = Flask(__name__)\n    return app\n",
    })  # fmt: skip
    detection = detect(ctx)
    assert detection.command == "gunicorn --bind ${HOST:-0.0.0.0}:${PORT} 'flaskr:create_app()'"
    assert "flaskr/__init__.py defines the app factory create_app()" in detection.evidence


def test_fastapi_factory_uses_uvicorn_factory(tmp_path: Path) -> None:
    ctx = context(tmp_path, {
        "requirements.txt": "fastapi\n",
        "app/main.py": "from fastapi import FastAPI\n\ndef create_app():\n    return FastAPI()\n",
    })  # fmt: skip
    assert detect(ctx).command == (
        "uvicorn --factory app.main:create_app --host ${HOST:-0.0.0.0} --port ${PORT}"
    )


def test_an_app_object_wins_over_a_factory(tmp_path: Path) -> None:
    ctx = context(tmp_path, {
        "requirements.txt": "flask\n",
        "app.py": "from flask import Flask\ndef create_app():\n    return Flask('x')\n",
        "wsgi.py": "from flask import Flask\napplication = Flask(__name__)\n",
    })  # fmt: skip
    assert detect(ctx).command.endswith(" wsgi:application")


def test_a_function_that_makes_no_app_is_not_a_factory(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"requirements.txt": "flask\n", "app.py": "def create_app():\n  1\n"})
    with pytest.raises(UsageError, match="no entry point was found"):
        detect(ctx)


SETTINGS = """\
import os
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")
STATIC_ROOT = BASE_DIR / "staticfiles"
"""


def test_django_collectstatic_with_a_throwaway_secret(tmp_path: Path) -> None:
    ctx = context(tmp_path, {**DJANGO_FILES, "requirements.txt": "django\n",
                             "mysite/settings.py": SETTINGS})  # fmt: skip
    detection = detect(ctx)
    assert (
        "COPY . .\nRUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic "
        "--noinput\nENV PORT=8080\n"
    ) in detection.dockerfile
    assert (
        "mysite/settings.py reads ALLOWED_HOSTS from DJANGO_ALLOWED_HOSTS: the platform sets "
        "it to the stage's host names"
    ) in detection.evidence
    assert detection.warnings == ()


def test_django_without_static_root_runs_no_collectstatic(tmp_path: Path) -> None:
    ctx = context(tmp_path, {**DJANGO_FILES, "requirements.txt": "django\n",
                             "mysite/settings.py": "DEBUG = True\n"})  # fmt: skip
    detection = detect(ctx)
    assert "collectstatic" not in detection.dockerfile
    assert detection.evidence[2].startswith("mysite/settings.py has no STATIC_ROOT")


def test_django_settings_package_and_an_unknown_hosts_variable_warns(tmp_path: Path) -> None:
    ctx = context(tmp_path, {
        "manage.py": DJANGO_MANAGE.replace("mysite.settings", "mysite.settings.production"),
        "mysite/wsgi.py": "", "mysite/settings/__init__.py": "",
        "mysite/settings/production.py":
            'ALLOWED_HOSTS = [os.getenv("RENDER_EXTERNAL_HOSTNAME")]\n',
        "requirements.txt": "django\n",
    })  # fmt: skip
    assert detect(ctx).warnings == (
        "mysite/settings/__init__.py reads ALLOWED_HOSTS from RENDER_EXTERNAL_HOSTNAME, which "
        "Stackyard does not set: set it as a runtime variable (stackyard env set STACK "
        "RENDER_EXTERNAL_HOSTNAME=...), or read one of ALLOWED_HOSTS, DJANGO_ALLOWED_HOSTS",
    )


def test_platform_hosts_name_loopback_and_the_stage_host() -> None:
    assert platform_hosts(None) == {
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    assert platform_hosts("shop.example.com")["ALLOWED_HOSTS"].endswith(",shop.example.com")


# --- JavaScript ------------------------------------------------------------------------


VITE = package(scripts={"dev": "vite", "build": "vite build"},
               devDependencies={"vite": "^8.3.4"})  # fmt: skip


def test_vite_with_index_html_at_the_root_is_built_not_served_raw(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"package.json": VITE, "package-lock.json": "{}", "index.html": "x"})
    detection = detect(ctx)
    assert detection.kind == "spa"
    assert detection.dockerfile == (
        "# Generated by stackyard dockerize (spa): the app listens on ${HOST:-0.0.0.0}:${PORT}.\n"
        "FROM node:22-slim AS build\nWORKDIR /app\nCOPY package.json package-lock.json ./\n"
        "RUN npm ci\nCOPY . .\nENV NODE_ENV=production\nRUN npm run build\n"
        "FROM caddy:2\nCOPY --from=build /app/dist /srv\n"
        "RUN printf '{\\n\\tadmin off\\n\\tauto_https off\\n}\\n"
        ":{$PORT:8080} {\\n\\tbind {$HOST:0.0.0.0}\\n\\troot * /srv\\n\\ttry_files {path} "
        "/index.html\\n\\tfile_server\\n}\\n' > /etc/caddy/Caddyfile\n"
        "ENV PORT=8080\n"
        'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]\n'
    )


def test_vite_out_dir_from_its_config(tmp_path: Path) -> None:
    config = "export default {build: {outDir: 'public'}}"
    ctx = context(tmp_path, {"package.json": VITE, "vite.config.js": config})
    detection = detect(ctx)
    assert "COPY --from=build /app/public /srv" in detection.dockerfile
    assert "vite.config.js" in detection.files


def test_create_react_app_is_built_and_its_dev_server_not_used(tmp_path: Path) -> None:
    scripts = {"start": "react-scripts start", "build": "react-scripts build"}
    cra = package(dependencies={"react-scripts": "5.0.1"}, scripts=scripts)
    detection = detect(context(tmp_path, {"package.json": cra}))
    assert detection.kind == "spa"
    assert "COPY --from=build /app/build /srv" in detection.dockerfile
    assert (
        "scripts.start (react-scripts start) is a development server: it is not used"
        in detection.evidence
    )


def test_nextjs_builds_prunes_and_starts_on_host_and_port(tmp_path: Path) -> None:
    next_app = package(dependencies={"next": "16.4.3"},
                       scripts={"build": "next build", "start": "next start"})  # fmt: skip
    detection = detect(context(tmp_path, {"package.json": next_app, "package-lock.json": ""}))
    assert detection.kind == "nextjs"
    assert detection.command == (
        "exec node_modules/.bin/next start --hostname ${HOST:-0.0.0.0} --port ${PORT}"
    )
    assert "RUN npm run build\nRUN npm prune --omit=dev\nFROM node:22-slim\n" in (
        detection.dockerfile
    )


def test_nextjs_google_fonts_are_warned(tmp_path: Path) -> None:
    next_app = package(dependencies={"next": "16"}, scripts={"build": "next build"})
    layout = 'import { Geist } from "next/font/google";\n'
    detection = detect(context(tmp_path, {"package.json": next_app, "app/layout.js": layout}))
    assert detection.warnings[0].startswith("app/layout.js loads next/font/google: next build")
    (tmp_path / "app/layout.js").write_text('import { GeistSans } from "geist/font/sans";\n')
    assert detect(tmp_path).warnings == ()


def test_nextjs_standalone_output_runs_server_js(tmp_path: Path) -> None:
    next_app = package(dependencies={"next": "16"}, scripts={"build": "next build"})
    config = "export default {output: 'standalone'}"
    ctx = context(
        tmp_path, {"package.json": next_app, "public/x.svg": "", "next.config.mjs": config}
    )
    detection = detect(ctx)
    assert detection.command == 'HOSTNAME="${HOST:-0.0.0.0}" exec node server.js'
    assert "COPY --from=build /app/.next/standalone ./" in detection.dockerfile
    assert "COPY --from=build /app/public ./public" in detection.dockerfile


@pytest.mark.parametrize(
    ("files", "install", "prune", "said"),
    [
        ({"yarn.lock": "# yarn lockfile v1\n"}, "yarn install --frozen-lockfile",
         "yarn install --frozen-lockfile --production --ignore-scripts",
         "yarn.lock is there (classic, v1): yarn install --frozen-lockfile"),
        ({"yarn.lock": "__metadata:\n  version: 8\n", ".yarnrc.yml": ""},
         "corepack prepare yarn@4.12.0 --activate\nCOPY package.json yarn.lock .yarnrc.yml ./\n"
         "RUN yarn install --immutable", "yarn workspaces focus --all --production",
         "yarn.lock is there (berry): yarn 4.12.0 through corepack"),
        ({"pnpm-lock.yaml": "lockfileVersion: '9.0'\n"},
         "corepack prepare pnpm@10.33.0 --activate\nCOPY package.json pnpm-lock.yaml ./\n"
         "RUN pnpm install --frozen-lockfile", "pnpm prune --prod",
         "pnpm-lock.yaml is there: pnpm 10.33.0 (lockfileVersion 9)"),
        ({"bun.lock": ""}, "RUN npm install -g bun@1.3.5\nCOPY package.json bun.lock ./\n"
         "RUN bun install --frozen-lockfile",
         "rm -rf node_modules && bun install --frozen-lockfile --production",
         "bun.lock is there: bun 1.3.5"),
        ({}, "COPY package.json ./\nRUN npm install", "npm prune --omit=dev",
         "no lock file (package-lock.json, yarn.lock, pnpm-lock.yaml, bun.lock): npm install "
         "resolves versions at build time, so builds are not reproducible; commit a lock file"),
    ],
)  # fmt: skip
def test_package_managers_from_lock_files(
    tmp_path: Path, files: dict[str, str], install: str, prune: str, said: str
) -> None:
    fields = package(scripts={"start": "node server.js", "build": "tsc"})
    deep = tmp_path / "a" / "b" / "c"  # no lock file of a folder above can be seen from here
    detection = detect(context(deep, {"package.json": fields, **files}))
    assert install in detection.dockerfile
    assert f"RUN {prune}\n" in detection.dockerfile
    assert said in detection.evidence


def test_a_lock_file_above_the_context_is_named(tmp_path: Path) -> None:
    context(tmp_path, {"package-lock.json": "{}", "apps/web/package.json": VITE})
    detection = detect(tmp_path / "apps" / "web")
    assert (
        "no lock file in the build context; ../../package-lock.json is outside it (a workspace "
        "root?), so npm install resolves versions at build time: builds are not reproducible"
    ) in detection.evidence
    assert "RUN npm install\n" in detection.dockerfile


def test_package_manager_field_names_the_version(tmp_path: Path) -> None:
    fields = package(scripts={"start": "node s.js"}, packageManager="pnpm@9.1.0+sha512.ab")
    detection = detect(context(tmp_path, {"package.json": fields, "pnpm-lock.yaml": ""}))
    assert "corepack prepare pnpm@9.1.0 --activate" in detection.dockerfile


def test_node_server_without_a_build_installs_production_packages_only(tmp_path: Path) -> None:
    fields = package(scripts={"start": "node server.js"})
    server = "app.listen(process.env.PORT, process.env.HOST)"
    ctx = context(
        tmp_path, {"package.json": fields, "package-lock.json": "{}", "server.js": server}
    )
    detection = detect(ctx)
    assert "RUN npm ci --omit=dev\n" in detection.dockerfile
    assert " AS build" not in detection.dockerfile
    assert detection.warnings == ()


@pytest.mark.parametrize(
    ("files", "command", "said"),
    [
        ({"package.json": package(main="bin/www"), "bin/www": ""}, "exec node bin/www",
         "package.json has no scripts.start; its main is bin/www"),
        ({"package.json": package(), "server.js": ""}, "exec node server.js",
         "package.json has no scripts.start; server.js is at the root"),
        ({"package.json": package(), "index.js": ""}, "exec node index.js",
         "package.json has no scripts.start; index.js is at the root"),
    ],
)  # fmt: skip
def test_start_fallbacks(tmp_path: Path, files: dict[str, str], command: str, said: str) -> None:
    detection = detect(context(tmp_path, files))
    assert (detection.kind, detection.command, detection.evidence[0]) == ("node", command, said)


def test_package_json_with_nothing_to_start_says_why(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"package.json": package(scripts={"test": "jest"})})
    with pytest.raises(UsageError) as caught:
        detect(ctx)
    assert caught.value.message.startswith(
        "package.json was found, but it is not a Node app Stackyard can start: it has no "
        "scripts.start, no main file, server.js, index.js or app.js"
    )


def test_a_dev_server_without_a_build_tool_is_refused(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"package.json": package(scripts={"start": "next dev"})})
    with pytest.raises(UsageError, match=r"runs a development server \(next dev\)"):
        detect(ctx)


# --- binding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "warned"),
    [
        ("server.listen(port);", True),
        ("app.listen(3000, () => console.log('up'))", True),
        ("app.listen(port, '0.0.0.0')", True),
        ("app.listen(port, '127.0.0.1')", False),
        ("app.listen(port, process.env.HOST)", False),
    ],
)
def test_node_servers_that_bind_every_interface_are_warned(
    tmp_path: Path, server: str, warned: bool
) -> None:
    fields = package(scripts={"start": "node ./bin/www"})
    ctx = context(tmp_path, {"package.json": fields, "bin/www": f"x\n{server}\n"})
    warnings = detect(ctx).warnings
    assert bool(warnings) is warned
    if warned:
        assert warnings[0].startswith("./bin/www:2 calls .listen(")


@pytest.mark.parametrize(
    ("web", "warned"),
    [
        ("gunicorn --bind 0.0.0.0:$PORT app:app", True),
        ("uvicorn main:app --host :: --port $PORT", True),
        ("hypercorn --bind [::]:$PORT main:app", True),
        ("gunicorn --bind ${HOST}:${PORT} app:app", False),
        ("gunicorn --bind 10.0.0.1:$PORT app:app", False),
    ],
)
def test_procfile_commands_that_bind_every_interface_are_warned(
    tmp_path: Path, web: str, warned: bool
) -> None:
    ctx = context(tmp_path, {"Procfile": f"web: {web}\n"})
    assert bool(detect(ctx).warnings) is warned


# --- the CLI ---------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    return app


def test_cli_text_shows_files_versions_warnings_and_an_existing_dockerfile(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path, {"package.json": package(scripts={"start": "node s.js"}),
                             "s.js": "app.listen(8080)", "Dockerfile": "FROM x\n"})  # fmt: skip
    result = CliRunner().invoke(cli(), ["dockerize", str(ctx)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        lines[0]
        == f"note      {ctx / 'Dockerfile'} exists: builds use it as it is, and not what follows"
    )
    assert "  from    package.json" in lines
    assert "version   node 22 (node:22-slim)" in lines
    assert "  because nothing pins a Node version: the default" in lines
    assert any(line.startswith("warning   s.js:1 calls .listen(8080)") for line in lines)


def test_cli_json_has_files_versions_warnings_and_the_dockerfile_note(tmp_path: Path) -> None:
    ctx = context(tmp_path, {".python-version": "3.13", "requirements.txt": "flask\n",
                             "app.py": FLASK_APP})  # fmt: skip
    result = CliRunner().invoke(cli(), ["dockerize", str(ctx), "--json"])
    data = json.loads(result.output)
    assert data["files"] == ["requirements.txt", ".python-version", "app.py"]
    assert data["versions"] == [{"language": "python", "version": "3.13",
                                 "image": "python:3.13-slim",
                                 "reason": ".python-version pins 3.13"}]  # fmt: skip
    assert data["warnings"] == []
    assert data["dockerfile_exists"] is False
