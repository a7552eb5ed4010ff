"""The real-app corpus: fetch each app of corpus.toml from the package registries into a
cache, laid out as a user would push it (the changes the manifest records, nothing more).

    .venv/bin/python -m tests.apps.corpus [NAME ...]   # fetch (all by default), print paths

The integration test (tests/integration/test_dockerize_corpus.py) and bench/dockerize.py
call ``ensure``. An app is fetched once per recipe: its folder's name carries a hash of its
manifest entry, so a changed entry is fetched anew. Nothing is fetched from a source host:
npm packages come through ``npm pack``, Python ones through ``pip download`` and
``pip install``, with the tools' own lock commands.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).resolve().parent / "corpus.toml"
CACHE = Path(os.environ.get("STACKYARD_CORPUS_DIR", "/var/cache/stackyard/apps"))
RECIPE = 1  # bump when a recipe below changes
TOOLS = {"Django": "5.2.19", "uv": "0.13.9"}
TIMEOUT = 900


@dataclass(frozen=True)
class App:
    """One manifest entry, as the tests read it."""

    name: str
    kind: str
    path: str
    expect: str
    context: str
    spa: bool
    asset: str | None
    imports: str | None
    warns: str | None
    entry: dict[str, Any]


def manifest() -> tuple[str, list[App]]:
    data = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    apps = [
        App(
            name=e["name"],
            kind=e["kind"],
            path=e["path"],
            expect=e["expect"],
            context=e.get("context", "."),
            spa=bool(e.get("spa", False)),
            asset=e.get("asset"),
            imports=e.get("imports"),
            warns=e.get("warns"),
            entry=e,
        )
        for e in data["app"]
    ]
    return str(data["lock_date"]), apps


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} (in {cwd}) exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def npm_unpack(spec: str, into: Path, work: Path) -> Path:
    """``npm pack NAME@VERSION`` and unpack it; returns the package's folder."""
    out = run(["npm", "pack", "--silent", "--pack-destination", str(work), spec], work)
    tarball = work / out.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        archive.extractall(into, filter="data")
    return into / "package"


def pypi_sdist(spec: str, work: Path) -> Path:
    """``pip download --no-binary`` of one sdist, unpacked; returns its folder."""
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "-d", str(work), spec], work)  # fmt: skip
    name, version = spec.split("==")
    tarball = next(work.glob(f"{name.lower()}-{version}.tar.gz"))
    with tarfile.open(tarball) as archive:
        archive.extractall(work, filter="data")
    return work / f"{name.lower()}-{version}"


def tools() -> Path:
    """A venv with Django and uv at pinned versions (the generators' runtime)."""
    venv = CACHE / f".tools-{_digest(json.dumps(TOOLS))}"
    if not (venv / "ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)], CACHE)
        specs = [f"{name}=={version}" for name, version in TOOLS.items()]
        run([str(venv / "bin" / "pip"), "install", "-q", *specs], CACHE)
        (venv / "ok").write_text("ok\n")
    return venv


def npm_lock(folder: Path, date: str) -> None:
    run(["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit",
         "--no-fund", f"--before={date}"], folder)  # fmt: skip


def startproject(folder: Path) -> None:
    run([str(tools() / "bin" / "django-admin"), "startproject", "mysite", str(folder)], folder)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise RuntimeError(f"{path}: the text to change was not found: {old!r}")
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --- recipes: one per app, each writes the app into `out` ----------------------------------


def django_whitenoise(out: Path, work: Path, date: str) -> None:
    startproject(out)
    (out / "requirements.txt").write_text("Django==5.2.19\nwhitenoise==6.12.0\n")
    settings = out / "mysite" / "settings.py"
    edit(settings, "from pathlib import Path\n", "import os\nfrom pathlib import Path\n")
    edit(settings, "DEBUG = True", 'DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"')
    edit(
        settings,
        "ALLOWED_HOSTS = []",
        'ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")',
    )
    edit(settings, "'django.middleware.security.SecurityMiddleware',\n",
         "'django.middleware.security.SecurityMiddleware',\n"
         "    'whitenoise.middleware.WhiteNoiseMiddleware',\n")  # fmt: skip
    with settings.open("a", encoding="utf-8") as handle:
        handle.write(
            '\nSTATIC_ROOT = BASE_DIR / "staticfiles"\n\nSTORAGES = {\n'
            '    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},\n'
            '    "staticfiles": {\n'
            '        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage",\n'
            "    },\n}\n"
        )


def django_uv(out: Path, work: Path, date: str) -> None:
    startproject(out)
    uv = str(tools() / "bin" / "uv")
    env = _uv_env(work, date)
    run([uv, "init", "--bare", "--name", "mysite", "--python", "3.11", "--vcs", "none"], out, env)
    _uv_pin_date(out, date)
    run([uv, "add", "--no-sync", "django==5.2.19"], out, env)


def _uv_env(work: Path, date: str) -> dict[str, str]:
    return {"UV_CACHE_DIR": str(work / "uv"), "UV_PYTHON_DOWNLOADS": "never"}


def _uv_pin_date(project: Path, date: str) -> None:
    """``[tool.uv] exclude-newer``: uv's documented setting that resolves as of a date."""
    with (project / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write(f'\n[tool.uv]\nexclude-newer = "{date}T00:00:00Z"\n')


def django_psycopg2(out: Path, work: Path, date: str) -> None:
    startproject(out)
    (out / "requirements.txt").write_text("Django==5.2.19\npsycopg2==2.9.13\n")
    settings = out / "mysite" / "settings.py"
    edit(settings, "from pathlib import Path\n", "import os\nfrom pathlib import Path\n")
    sqlite = "'ENGINE': 'django.db.backends.sqlite3',\n        'NAME': BASE_DIR / 'db.sqlite3',"
    edit(settings, sqlite,
         "'ENGINE': 'django.db.backends.postgresql',\n"
         "        'NAME': os.environ.get('POSTGRES_DB', 'mysite'),\n"
         "        'USER': os.environ.get('POSTGRES_USER', 'mysite'),\n"
         "        'HOST': os.environ.get('POSTGRES_HOST', '127.0.0.1'),")  # fmt: skip


def flaskr(out: Path, work: Path, date: str) -> None:
    sdist = pypi_sdist("flask==3.1.3", work)
    shutil.copytree(sdist / "examples" / "tutorial", out, dirs_exist_ok=True)


def fastapi_uv(out: Path, work: Path, date: str) -> None:
    uv = str(tools() / "bin" / "uv")
    env = _uv_env(work, date)
    run([uv, "init", "--app", "--name", "hello", "--python", "3.13", "--vcs", "none",
         "--no-readme", str(out)], work, env)  # fmt: skip
    _uv_pin_date(out, date)
    run([uv, "add", "--no-sync", "fastapi==0.165.0"], out, env)
    sdist = pypi_sdist("fastapi==0.165.0", work)
    shutil.copy(sdist / "docs_src" / "first_steps" / "tutorial001.py", out / "main.py")


def _express(out: Path, work: Path) -> None:
    generator = npm_unpack("express-generator@4.16.1", work / "generator", work)
    run(["npm", "install", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"],
        generator)  # fmt: skip
    run(["node", str(generator / "bin" / "express-cli.js"), "--no-view", "--force", str(out)],
        work)  # fmt: skip


def express_yarn(out: Path, work: Path, date: str) -> None:
    _express(out, work)
    run(["npx", "--yes", "yarn@1.22.22", "install", "--ignore-scripts", "--no-progress"],
        out, {"YARN_CACHE_FOLDER": str(work / "yarn")})  # fmt: skip
    shutil.rmtree(out / "node_modules")


def express_main(out: Path, work: Path, date: str) -> None:
    _express(out, work)
    package = json.loads((out / "package.json").read_text())
    del package["scripts"]["start"]
    if not package["scripts"]:
        del package["scripts"]
    package["main"] = "bin/www"
    (out / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    npm_lock(out, date)


def nextjs(out: Path, work: Path, date: str) -> None:
    creator = npm_unpack("create-next-app@16.4.3", work / "creator", work)
    run(["node", str(creator / "dist" / "index.js"), str(out), "--js", "--app",
         "--no-tailwind", "--no-linter", "--no-src-dir", "--import-alias", "@/*",
         "--skip-install", "--disable-git", "--use-npm", "--no-react-compiler",
         "--no-agents-md", "--no-agent-feedback", "--yes"], work,
        {"CI": "1", "NEXT_TELEMETRY_DISABLED": "1"})  # fmt: skip
    # next/font/google downloads Geist from Google Fonts during the build, which these
    # machines cannot reach: take Geist from its npm package instead (Vercel's documented way).
    layout = out / "app" / "layout.js"
    edit(layout, 'import { Geist, Geist_Mono } from "next/font/google";\n',
         'import { GeistSans } from "geist/font/sans";\n'
         'import { GeistMono } from "geist/font/mono";\n')  # fmt: skip
    text = layout.read_text(encoding="utf-8")
    text = re.sub(r"const geistSans = Geist\(\{.*?\}\);", "const geistSans = GeistSans;", text,
                  flags=re.DOTALL)  # fmt: skip
    text = re.sub(r"const geistMono = Geist_Mono\(\{.*?\}\);", "const geistMono = GeistMono;",
                  text, flags=re.DOTALL)  # fmt: skip
    layout.write_text(text, encoding="utf-8")
    package = json.loads((out / "package.json").read_text())
    package["dependencies"]["geist"] = "1.7.0"
    (out / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    npm_lock(out, date)


def _vite(out: Path, work: Path, template: str) -> None:
    creator = npm_unpack("create-vite@9.3.0", work / "creator", work)
    shutil.copytree(creator / f"template-{template}", out, dirs_exist_ok=True)
    (out / "_gitignore").rename(out / ".gitignore")  # what create-vite does


def vite_react(out: Path, work: Path, date: str) -> None:
    _vite(out, work, "react")
    npm_lock(out, date)


def cra(out: Path, work: Path, date: str) -> None:
    template = npm_unpack("cra-template@1.3.0", work / "template", work)
    shutil.copytree(template / "template", out, dirs_exist_ok=True)
    (out / "gitignore").rename(out / ".gitignore")
    extra = json.loads((template / "template.json").read_text())["package"]
    package = {
        "name": "cra", "version": "0.1.0", "private": True,
        "dependencies": {"react": "^19.0.0", "react-dom": "^19.0.0",
                         "react-scripts": "5.0.1", **extra["dependencies"]},
        "scripts": {"start": "react-scripts start", "build": "react-scripts build",
                    "test": "react-scripts test", "eject": "react-scripts eject"},
        "eslintConfig": extra["eslintConfig"],
        "browserslist": {
            "production": [">0.2%", "not dead", "not op_mini all"],
            "development": ["last 1 chrome version", "last 1 firefox version",
                            "last 1 safari version"],
        },
    }  # fmt: skip
    (out / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    npm_lock(out, date)


def _h5bp(out: Path, work: Path) -> None:
    package = npm_unpack("html5-boilerplate@9.0.1", work / "h5bp", work)
    shutil.copytree(package / "dist", out, dirs_exist_ok=True)


def h5bp_webpack(out: Path, work: Path, date: str) -> None:
    _h5bp(out, work)
    npm_lock(out, date)


def static_plain(out: Path, work: Path, date: str) -> None:
    _h5bp(out, work)
    for name in ["package.json", *(p.name for p in out.glob("webpack.*.js"))]:
        (out / name).unlink()


def monorepo_vite(out: Path, work: Path, date: str) -> None:
    _vite(out / "apps" / "web", work, "vanilla")
    root = {"name": "monorepo", "private": True, "workspaces": ["apps/*"]}
    (out / "package.json").write_text(json.dumps(root, indent=2) + "\n")
    npm_lock(out, date)


RECIPES: dict[str, Callable[[Path, Path, str], None]] = {
    "django-whitenoise": django_whitenoise,
    "django-uv": django_uv,
    "django-psycopg2": django_psycopg2,
    "flaskr": flaskr,
    "fastapi-uv": fastapi_uv,
    "express-yarn": express_yarn,
    "express-main": express_main,
    "nextjs": nextjs,
    "vite-react": vite_react,
    "cra": cra,
    "h5bp-webpack": h5bp_webpack,
    "static-plain": static_plain,
    "monorepo-vite": monorepo_vite,
}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure(app: App, date: str) -> Path:
    """The app's folder in the cache, fetched first if missing; returns the repo root."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a test and a benchmark may fetch at once
        return _ensure(app, date)


def _ensure(app: App, date: str) -> Path:
    key = _digest(json.dumps([RECIPE, date, TOOLS, app.entry], sort_keys=True))
    folder = CACHE / f"{app.name}-{key}"
    if (folder / ".corpus-ok").exists():
        return folder / "app"
    with tempfile.TemporaryDirectory(prefix=f".{app.name}-", dir=CACHE) as tmp:
        work = Path(tmp)
        out = work / "app"
        out.mkdir()
        (work / "work").mkdir()
        RECIPES[app.name](out, work / "work", date)
        (work / ".corpus-ok").write_text(json.dumps(app.entry, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (out).rename(folder / "app")
        (work / ".corpus-ok").rename(folder / ".corpus-ok")
    for old in CACHE.glob(f"{app.name}-*"):
        if old != folder and re.fullmatch(rf"{re.escape(app.name)}-[0-9a-f]{{12}}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    return folder / "app"


def main() -> None:
    date, apps = manifest()
    wanted = set(sys.argv[1:])
    for app in apps:
        if not wanted or app.name in wanted:
            print(app.name, ensure(app, date), flush=True)


if __name__ == "__main__":
    main()
