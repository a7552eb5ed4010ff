"""The secrets key file, encryption, and env file templates (no platform, no process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.errors import ComponentError, ConfigError
from stackyard.secrets.envfile import render_env_file
from stackyard.secrets.vault import SecretDecryptionError, Vault, key_file, new_key


def test_the_key_file_is_made_on_first_use_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets.key"
    vault = Vault(lambda: key_file(path))
    assert not path.exists()  # nothing encrypted yet: no key needed
    token = vault.encrypt("s3cr3t")
    assert path.stat().st_mode & 0o777 == 0o600
    assert "s3cr3t" not in token
    assert Vault(lambda: key_file(path)).decrypt(token) == "s3cr3t"  # same key read back


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    key_file(path)
    path.chmod(0o644)
    with pytest.raises(ComponentError, match="only its owner may read it") as caught:
        key_file(path)
    assert caught.value.hint == f"chmod 600 {path}"


def test_another_key_cannot_decrypt() -> None:
    token = Vault(new_key).encrypt("value")
    with pytest.raises(SecretDecryptionError, match="secrets key does not match"):
        Vault(new_key).decrypt(token)


def test_env_file_renders_variables_and_secrets() -> None:
    text = render_env_file(
        "backend.env.j2",
        "GREETING={{ GREETING }}\nDB={{ DB_PASSWORD }}\n",
        {"GREETING": "hi", "DB_PASSWORD": "a&b<c>"},
    )
    assert text == "GREETING=hi\nDB=a&b<c>\n"  # no HTML escaping, trailing newline kept


def test_a_missing_variable_names_the_template_and_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"backend\.env\.j2: 'DB_URL' is undefined"):
        render_env_file("backend.env.j2", "DB={{ DB_URL }}", {"GREETING": "hi"})


def test_a_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"backend\.env\.j2, line 2"):
        render_env_file("backend.env.j2", "A=1\nB={{ oops", {})


def test_templates_run_sandboxed() -> None:
    # A template from the repo must not reach Python internals of the control plane.
    with pytest.raises(ConfigError, match=r"backend\.env\.j2"):
        render_env_file("backend.env.j2", "{{ ''.__class__.__mro__[1].__subclasses__() }}", {})
