"""The ACME CA's External Account Binding: its key id, and its HMAC key kept sealed.

`stackyard up --acme-eab-hmac` seals the HMAC key with the platform's secrets key into the
data directory (mode 0600), so it never sits in a command line, a unit file or
``platform.json``; the control plane unseals it when it wires the router
(pipeline/services.py) and masks it in every log.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import replace
from pathlib import Path

from stackyard.errors import UsageError
from stackyard.secrets.files import read_private, write_private
from stackyard.secrets.vault import Vault, key_file
from stackyard.settings import Settings

EAB_HMAC_ENV = "STACKYARD_ACME_EAB_HMAC"  # where `up` also takes the HMAC key from


def eab_file(settings: Settings) -> Path:
    return settings.data_dir / "acme-eab-hmac.sealed"


def _vault(settings: Settings) -> Vault:
    return Vault(lambda: key_file(settings.data_dir / "secrets.key"))


def check_eab_hmac(value: str) -> str:
    """The HMAC key as the CA gave it: base64url, unpadded or padded; else a UsageError."""
    text = value.strip()
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        decoded = b""
    if not text or not decoded:
        raise UsageError(
            "--acme-eab-hmac is not a base64url HMAC key",
            hint="paste the HMAC key exactly as the CA shows it (letters, digits, - and _)",
        )
    return text


def seal_eab_hmac(settings: Settings, value: str) -> None:
    """Keep the HMAC key, encrypted, in the data directory (replacing an earlier one)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sealed = _vault(settings).encrypt(check_eab_hmac(value))
    path = eab_file(settings)
    fresh = path.with_name(path.name + ".new")
    fresh.unlink(missing_ok=True)
    write_private(fresh, sealed + "\n")
    os.replace(fresh, path)


def with_eab_hmac(settings: Settings) -> Settings:
    """``settings`` with the sealed HMAC key, when it names a key id and has none yet."""
    if not settings.acme_eab_kid or settings.acme_eab_hmac:
        return settings
    path = eab_file(settings)
    if not path.exists():
        raise UsageError(
            f"--acme-eab-kid {settings.acme_eab_kid} has no HMAC key",
            hint="give it once with --acme-eab-hmac (or STACKYARD_ACME_EAB_HMAC); the "
            "platform keeps it sealed in its data directory",
        )
    hmac = _vault(settings).decrypt(read_private(path).strip(), what="the ACME EAB HMAC key")
    return replace(settings, acme_eab_hmac=hmac)
