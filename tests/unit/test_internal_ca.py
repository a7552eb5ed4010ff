"""``tls: internal`` certificates minted by the router (router/internal_ca.py): the renewal
decision, what a bundle holds, its file mode, the state ``domains`` shows, from a local CA
made here the way Caddy's pki app lays it out in its storage."""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stackyard.errors import ComponentError
from stackyard.router import internal_ca
from stackyard.router.certificates import certificate_of
from stackyard.router.directory import DirectoryClient

from ..responder_table import responder_table

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def local_ca(
    storage: Path, *, valid_for: timedelta = timedelta(days=7), at: datetime = NOW
) -> None:
    """An intermediate as Caddy's pki app stores it (self-signed: enough to sign with),
    valid from a day before ``at``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Caddy Local Authority - ECC Intermediate")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(at - timedelta(days=1))
        .not_valid_after(at + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = storage / internal_ca.LOCAL_CA
    folder.mkdir(parents=True)
    (folder / "intermediate.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "intermediate.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_a_bundle_is_minted_when_missing_and_again_after_two_thirds_of_its_life(
    tmp_path: Path,
) -> None:
    local_ca(tmp_path)
    assert internal_ca.needs_renewal(None, NOW)
    leaf = internal_ca.mint(tmp_path, "Intra.test", internal_ca.local_signer(tmp_path), NOW)
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life == internal_ca.LIFETIME + internal_ca.BACKDATE
    due = leaf.not_valid_before_utc + life * 2 / 3
    assert not internal_ca.needs_renewal(leaf, NOW)
    assert not internal_ca.needs_renewal(leaf, due - timedelta(seconds=1))
    assert internal_ca.needs_renewal(leaf, due)
    assert internal_ca.needs_renewal(leaf, leaf.not_valid_after_utc + timedelta(hours=1))


def test_a_bundle_holds_leaf_chain_and_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    local_ca(tmp_path)
    signer = internal_ca.local_signer(tmp_path)
    internal_ca.mint(tmp_path, "Intra.test", signer, NOW)
    path = internal_ca.bundle_path(tmp_path, "intra.test")
    assert path.name == "intra.test.pem"  # lowercase: the SNI Caddy asks about
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    chain = x509.load_pem_x509_certificates(path.read_bytes())
    assert chain[1] == signer.cert
    leaf = chain[0]
    leaf.verify_directly_issued_by(signer.cert)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["intra.test"]
    key = serialization.load_pem_private_key(
        path.read_bytes().split(b"-----END CERTIFICATE-----\n")[-1], None
    )
    assert key.public_key() == leaf.public_key()
    assert [p.name for p in path.parent.iterdir()] == ["intra.test.pem"]  # no temporary left
    assert internal_ca.bundled_names(tmp_path) == {"intra.test"}
    assert internal_ca.remove(tmp_path, "intra.test")
    assert not internal_ca.remove(tmp_path, "intra.test")
    assert internal_ca.bundled_names(tmp_path) == set()


def test_a_leaf_never_outlives_the_intermediate_that_signs_it(tmp_path: Path) -> None:
    local_ca(tmp_path, valid_for=timedelta(hours=3))
    leaf = internal_ca.mint(tmp_path, "intra.test", internal_ca.local_signer(tmp_path), NOW)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=3)
    # Its renewal comes after two thirds of that shorter life, before the intermediate ends.
    assert internal_ca.needs_renewal(leaf, NOW + timedelta(hours=2, minutes=1))


def test_domains_shows_state_issuer_and_expiry_of_an_internal_name(tmp_path: Path) -> None:
    local_ca(tmp_path)
    assert certificate_of("intra.test", tmp_path, []).state == "pending"
    leaf = internal_ca.mint(tmp_path, "intra.test", internal_ca.local_signer(tmp_path), NOW)
    found = certificate_of("intra.test", tmp_path, [], now=NOW)
    assert (found.state, found.issuer, found.expires) == (
        "valid",
        "Caddy Local Authority - ECC Intermediate",
        leaf.not_valid_after_utc,
    )
    later = certificate_of("intra.test", tmp_path, [], now=leaf.not_valid_after_utc)
    assert later.state == "expired"


def test_a_missing_local_ca_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="cannot read Caddy's local CA") as caught:
        internal_ca.local_signer(tmp_path)
    assert "pki app" in caught.value.hint


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    """A real responder table behind its control socket (what the routers ask)."""
    with responder_table(tmp_path) as socket_path:
        yield socket_path


def internal_names(client: DirectoryClient) -> list[str]:
    return [name for name, (_, mode) in client.names()[0].items() if mode == "internal"]


def test_two_stages_changing_names_at_once_never_delete_each_others_bundle(
    tmp_path: Path, directory: Path
) -> None:
    """Two stages (two routers: each its own client and Bundles, as two processes would)
    each move to a new internal name again and again, at the same time, the way
    ensure_route does: mint the new name's bundle and put it in the responder's table
    under ``adding``, then prune (the old name goes). Without the lock, one stage's prune
    can see the other's new bundle before its name is in the table and delete it. After
    every step a stage's current name must still have its bundle; at the end the bundles
    are exactly the two current names."""
    storage = tmp_path / "storage"
    local_ca(storage, at=datetime.now(UTC))
    rounds = 60
    lost: list[str] = []

    def stage(route: str) -> None:
        client = DirectoryClient(directory)
        bundles = internal_ca.Bundles(storage, lambda: internal_names(client))
        for step in range(rounds):
            name = f"{route}{step}.test"
            with bundles.adding([name]) as minted:
                assert minted == [name]
                client.set_hosts(route, [name], "internal")
            bundles.prune()
            if internal_ca.read_bundle(storage, name) is None:
                lost.append(name)

    threads = [threading.Thread(target=stage, args=(route,)) for route in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert lost == []
    last = {f"a{rounds - 1}.test", f"b{rounds - 1}.test"}
    assert internal_ca.bundled_names(storage) == last
    assert set(internal_names(DirectoryClient(directory))) == last


def test_a_renewal_mints_only_names_that_are_internal_now(tmp_path: Path, directory: Path) -> None:
    """A renewal racing with a removal cannot bring the removed name's bundle back: it
    mints only the names the responder has as internal (under the same lock)."""
    local_ca(tmp_path, at=datetime.now(UTC))
    client = DirectoryClient(directory)
    bundles = internal_ca.Bundles(tmp_path, lambda: internal_names(client))
    with bundles.adding(["Kept.test", "gone.test"]):
        client.set_hosts("kept", ["kept.test", "gone.test"], "internal")
    client.set_hosts("kept", ["kept.test"], "internal")
    assert bundles.prune() == ["gone.test"]
    for name in ("kept.test", "gone.test"):
        internal_ca.remove(tmp_path, name)
    assert bundles.renew(["kept.test", "gone.test"]) == ["kept.test"]
    assert internal_ca.bundled_names(tmp_path) == {"kept.test"}
    assert stat.S_IMODE((tmp_path / internal_ca.BUNDLES / internal_ca.LOCK).stat().st_mode) == 0o600
