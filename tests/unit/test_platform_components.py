"""Component plans, credentials files and supervisor errors, with no component started
(the supervisor's error tests run a missing binary and ``sh -c 'exit 3'``)."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import bcrypt
import pytest

from stackyard.errors import ComponentError
from stackyard.platform.components import (
    ComponentSpec,
    caddy_autosave,
    plan_caddy,
    plan_components,
    plan_registry,
)
from stackyard.platform.credentials import ensure_registry_login, ensure_token
from stackyard.platform.supervisor import check_ports_free, spawn, wait_ready
from stackyard.settings import Settings


def test_token_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    first = ensure_token(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) == first


def test_token_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    ensure_token(path)
    path.chmod(0o644)
    with pytest.raises(ComponentError, match="mode is 0o644") as caught:
        ensure_token(path)
    assert caught.value.hint == f"chmod 600 {path}"


def test_registry_plan_uses_binary_with_htpasswd_auth_on_loopback(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, registry_port=15999)
    spec = plan_registry(settings, binary="/usr/bin/docker-registry")
    assert spec.argv == (
        "/usr/bin/docker-registry",
        "serve",
        str(settings.run_dir / "registry.yml"),
    )
    config = json.loads(spec.files[settings.run_dir / "registry.yml"])
    assert config["http"]["addr"] == "127.0.0.1:15999"
    assert config["auth"]["htpasswd"]["path"] == str(tmp_path / "registry" / "htpasswd")
    assert "maintenance" not in config["storage"]
    assert spec.port == 15999
    credentials = ensure_registry_login(tmp_path / "registry-credentials.json", "127.0.0.1:15999")
    assert credentials.registry == "127.0.0.1:15999"
    lines = (tmp_path / "registry" / "htpasswd").read_text().splitlines()
    users = dict(line.split(":", 1) for line in lines)
    assert list(users) == [credentials.username, "AWS"]  # AWS: TinyStacks' docker login -u AWS
    for hashed in users.values():
        assert bcrypt.checkpw(credentials.password.encode(), hashed.encode())


def test_an_htpasswd_from_before_the_aws_user_gets_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, registry_port=15999)
    htpasswd = tmp_path / "registry" / "htpasswd"
    htpasswd.parent.mkdir(parents=True)
    htpasswd.write_text("stackyard:$2b$05$old\n")
    plan_registry(settings, binary="/usr/bin/docker-registry")
    assert [line.split(":")[0] for line in htpasswd.read_text().splitlines()] == [
        "stackyard",
        "AWS",
    ]


def test_registry_plan_falls_back_to_official_image(tmp_path: Path) -> None:
    spec = plan_registry(Settings(data_dir=tmp_path), binary=None)
    assert spec.argv[:2] == ("docker", "run")
    assert "registry:2" in spec.argv
    assert spec.argv[spec.argv.index("--network") :][:2] == ("--network", "host")
    assert spec.container_name == "stackyard-registry-5000"


def test_read_only_registry_serves_pulls_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    spec = plan_registry(settings, binary="/usr/bin/docker-registry", mode="read-only")
    config = json.loads(spec.files[settings.run_dir / "registry.yml"])
    assert config["storage"]["maintenance"] == {"readonly": {"enabled": True}}
    assert config["storage"]["delete"] == {"enabled": True}
    assert [c.name for c in plan_components(settings, registry_mode="stopped")] == [
        "caddy-1",
        "caddy-2",
    ]


def test_caddy_admin_is_a_unix_socket_and_caddy_resumes_its_saved_config(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    spec = plan_caddy(settings, 2, binary="/usr/bin/caddy")
    assert spec.name == "caddy-2"
    assert spec.argv == (
        "/usr/bin/caddy", "run", "--config", str(settings.run_dir / "caddy-2.json"), "--resume"
    )  # fmt: skip
    config = json.loads(spec.files[settings.run_dir / "caddy-2.json"])
    assert config["admin"] == {
        "listen": f"unix/{settings.run_dir / 'caddy-2.sock'}",
        "origins": ["caddy-admin"],
    }
    assert spec.ready_socket == settings.run_dir / "caddy-2.sock"
    assert spec.port is None  # no TCP port at all until a stage gets a route
    # Its autosaved config is under its own XDG config dir, apart from the other Caddy's.
    home = Path(spec.env["XDG_CONFIG_HOME"])
    assert caddy_autosave(settings, 2) == home / "caddy" / "autosave.json"
    assert caddy_autosave(settings, 1) != caddy_autosave(settings, 2)
    fallback = plan_caddy(settings, 2, binary=None)
    assert "caddy:2" in fallback.argv
    assert f"{settings.run_dir}:{settings.run_dir}" in fallback.argv
    assert fallback.argv[-1] == "--resume"


def test_missing_binary_names_component_and_install_hint(tmp_path: Path) -> None:
    spec = ComponentSpec(
        name="registry",
        argv=(str(tmp_path / "no-such-binary"),),
        ready_url="http://127.0.0.1:1/",
        ready_statuses=frozenset({200}),
        log_file=tmp_path / "r.log",
        install_hint="install it with: apt-get install docker-registry",
    )
    with pytest.raises(ComponentError) as caught:
        spawn(spec)
    assert "registry" in caught.value.message
    assert caught.value.hint == "install it with: apt-get install docker-registry"


def test_component_that_exits_shows_its_log(tmp_path: Path) -> None:
    spec = ComponentSpec(
        name="caddy",
        argv=("sh", "-c", "echo 'bad config line 3'; exit 3"),
        ready_url="http://127.0.0.1:1/",
        ready_statuses=frozenset({200}),
        log_file=tmp_path / "c.log",
        install_hint="apt-get install caddy",
    )
    started = spawn(spec)
    with pytest.raises(ComponentError, match=r"caddy exited with status 3[\s\S]*bad config line 3"):
        wait_ready(started, timeout=5)


def test_port_in_use_names_the_component() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ComponentError, match=f"registry: port 127.0.0.1:{port} is already in use"
        ):
            check_ports_free([("registry", "127.0.0.1", port)])
