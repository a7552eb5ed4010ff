"""The ``stackyard`` command starts without loading the services, the store or httpx."""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from stackyard.buildspec.runner import DEFAULT_COMMAND_TIMEOUT
from stackyard.cli.buildspec import app as buildspec_app

HEAVY = [
    "httpx",
    "sqlalchemy",
    "pydantic",
    "yaml",
    "stackyard.api",
    "stackyard.pipeline",
    "stackyard.deploy",
    "stackyard.buildspec",
    "stackyard.config.models",
    "stackyard.config.loading",
    "stackyard.config.reference",
    "stackyard.config.values",
    "stackyard.config.buildspec",
    "stackyard.images",
    "stackyard.platform.lifecycle",
    "stackyard.store",
]

PROBE = """
import json, sys
from stackyard.cli.main import app
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_cli_loads_no_heavy_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []


def test_command_timeout_help_shows_the_runners_default() -> None:
    command = typer.main.get_command(buildspec_app)
    run = command.commands["run"]  # type: ignore[attr-defined]
    option = next(p for p in run.params if p.name == "command_timeout")
    assert float(option.show_default) == DEFAULT_COMMAND_TIMEOUT


COMMAND_PROBE = """
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        data = b'{"builds": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ["STACKYARD_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
os.environ["STACKYARD_TOKEN"] = "t"
from stackyard.cli.main import app
app(["builds", "hello", "--json"], standalone_mode=False)
server.shutdown()
print(json.dumps(sorted(sys.modules)))
"""


def test_a_json_command_talks_to_the_api_without_httpx_rich_or_pydantic() -> None:
    """A command is a short process: its start-up is most of what a quick command costs."""
    done = subprocess.run(
        [sys.executable, "-c", COMMAND_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    printed, modules = done.stdout.rsplit("\n[", 1)
    assert json.loads(printed) == []
    loaded = json.loads("[" + modules)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in [*HEAVY, "rich"])]
    assert heavy == []
