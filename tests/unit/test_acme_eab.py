"""The ACME External Account Binding of `up`: the HMAC key is sealed in the data directory,
unsealed for the router only, masked in logs and absent from anything the platform shows
(its settings' repr, the control plane's command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard import plugins
from stackyard.cli.shared import keep_eab_hmac, settings_of_command_line
from stackyard.errors import UsageError
from stackyard.platform.acme import eab_file, seal_eab_hmac, with_eab_hmac
from stackyard.platform.lifecycle import foreground_argv
from stackyard.router.caddy import Acme
from stackyard.settings import Settings
from tests.access_yard import access_yard
from tests.gate_runs import BOUND

HMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


def test_the_hmac_key_is_sealed_and_unsealed_for_the_router_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, acme_eab_kid="kid-1")
    seal_eab_hmac(settings, HMAC + "\n")
    sealed = eab_file(settings)
    assert sealed.stat().st_mode & 0o777 == 0o600
    assert HMAC not in sealed.read_text()

    unsealed = with_eab_hmac(settings)
    assert unsealed.acme_eab_hmac == HMAC
    assert HMAC not in repr(unsealed)
    offered = plugins.offers(unsealed, username="u", password="p")["router"]
    assert (offered["acme_eab_key_id"], offered["acme_eab_mac_key"]) == ("kid-1", HMAC)
    acme = Acme(ca="https://ca.test/dir", eab_key_id="kid-1", eab_mac_key=HMAC)
    assert acme.issuer()["external_account"] == {"key_id": "kid-1", "mac_key": HMAC}
    assert HMAC not in repr(acme)

    # A background control plane gets the key id on its command line, never the key.
    argv = foreground_argv(unsealed)
    assert HMAC not in " ".join(argv)
    assert argv[3] == "up"
    read_back = settings_of_command_line(argv[4:])  # how `upgrade` keeps the options
    assert (read_back.acme_eab_kid, read_back.acme_eab_hmac) == ("kid-1", "")


def test_up_seals_the_key_its_options_give_and_keeps_it_out_of_its_settings(
    tmp_path: Path,
) -> None:
    given = Settings(data_dir=tmp_path, acme_eab_kid="kid-1", acme_eab_hmac=HMAC)
    kept = keep_eab_hmac(given)
    assert kept.acme_eab_hmac == ""
    assert with_eab_hmac(kept).acme_eab_hmac == HMAC
    assert keep_eab_hmac(Settings(data_dir=tmp_path, acme_eab_kid="kid-1")).acme_eab_kid
    with pytest.raises(UsageError, match="--acme-eab-hmac needs --acme-eab-kid"):
        keep_eab_hmac(Settings(data_dir=tmp_path / "other", acme_eab_hmac=HMAC))


def test_a_new_hmac_key_replaces_the_old_one(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, acme_eab_kid="kid-1")
    seal_eab_hmac(settings, "b2xkLWtleQ")
    seal_eab_hmac(settings, HMAC)
    assert with_eab_hmac(settings).acme_eab_hmac == HMAC


def test_a_key_id_without_a_key_and_a_key_that_is_no_base64url_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match="has no HMAC key") as missing:
        with_eab_hmac(Settings(data_dir=tmp_path, acme_eab_kid="kid-1"))
    assert "--acme-eab-hmac" in (missing.value.hint or "")
    with pytest.raises(UsageError, match="not a base64url HMAC key"):
        seal_eab_hmac(Settings(data_dir=tmp_path, acme_eab_kid="kid-1"), "not base64!")
    assert not eab_file(Settings(data_dir=tmp_path)).exists()
    assert with_eab_hmac(Settings(data_dir=tmp_path)).acme_eab_hmac == ""  # no binding


def test_every_log_of_the_platform_masks_the_hmac_key(tmp_path: Path) -> None:
    seal_eab_hmac(Settings(data_dir=tmp_path, acme_eab_kid="kid-1"), HMAC)
    with access_yard(tmp_path, acme_eab_kid="kid-1") as yard:
        try:
            masker = yard.services.secrets.masker("hello")
            assert masker.mask(f"the key is {HMAC}") == "the key is ***"
        finally:
            yard.services.runs.shutdown(timeout=BOUND)
